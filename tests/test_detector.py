"""The estimator and its model file, on a tiny network and images made here."""

from __future__ import annotations

import json
import pickle
import struct
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from torch import nn

from fakespotter.backbones import Backbone
from fakespotter.detector import FakeSpotter
from fakespotter.features import CoverageFeatures
from fakespotter.modelfile import ModelFileError
from fakespotter.persistence import load_model, save_model

SIZE = 16


def _tiny_preprocess(crops: np.ndarray) -> torch.Tensor:
    # module level, not a closure: a detector holding this backbone can be pickled
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tiny_backbone() -> Backbone:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 8),
    )
    model.eval()
    return Backbone(
        name="tiny",
        model=model,
        input_size=SIZE,
        preprocess=_tiny_preprocess,
        alignment_template=np.zeros((5, 2)),
        activations={"0": "1", "2": "3"},
        weights_sha256="0" * 64,
    )


def toy_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """'Fake' crops are smoother than 'real' ones: a difference a conv layer can count."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.integers(0, 256, size=(n, SIZE, SIZE, 3)).astype(np.float64)
    smooth = (X + np.roll(X, 1, 1) + np.roll(X, 1, 2) + np.roll(X, (1, 1), (1, 2))) / 4
    X[y == 1] = smooth[y == 1]
    return X.astype(np.uint8), y


@pytest.fixture(scope="module")
def fitted():
    X, y = toy_faces(80)
    return FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3).fit(X, y)


def test_estimator_contract(fitted):
    X, y = toy_faces(40, seed=1)
    det = FakeSpotter(backbone=tiny_backbone(), variant="layer", cv=3)
    with pytest.raises(NotFittedError):
        det.predict(X)
    assert det.fit(*toy_faces(60)) is det
    assert clone(det).get_params()["variant"] == "layer"
    fitted_attrs = [k for k in vars(det) if k.endswith("_") and not k.startswith("_")]
    assert {"features_", "classifier_", "novelty_", "operating_point_"} <= set(fitted_attrs)
    assert "coef_" not in vars(clone(det))
    # layer variant: one feature per tapped Conv2d/Linear (3 taps)
    assert det.transform(X).shape == (40, 3)
    proba = det.predict_proba(X)
    assert (
        proba.shape == (40, 2)
        and np.allclose(proba.sum(1), 1)
        and ((0 <= proba) & (proba <= 1)).all()
    )
    assert (det.predict(X) == (proba[:, 1] >= 0.5)).all()
    assert det.score(X, y) == pytest.approx((det.predict(X) == y).mean())


def test_channel_variant_learns_the_toy_task(fitted):
    X, y = toy_faces(60, seed=2)
    assert fitted.transform(X).shape == (60, 4 + 6 + 8)  # one count per channel of each tap
    assert fitted.score(X, y) >= 0.9
    assert fitted.C_ in fitted.Cs


def test_embedding_variant_uses_the_final_output():
    X, y = toy_faces(60)
    det = FakeSpotter(backbone=tiny_backbone(), variant="embedding", cv=3).fit(X, y)
    bb = tiny_backbone()
    with torch.inference_mode():
        expected = bb.model(bb.preprocess(X)).numpy()
    np.testing.assert_allclose(det.transform(X), expected, rtol=1e-6)


def test_bad_input_is_refused_clearly():
    det = FakeSpotter(backbone=tiny_backbone(), variant="nope")
    X, y = toy_faces(20)
    with pytest.raises(ValueError, match="variant"):
        det.fit(X, y)
    det = FakeSpotter(backbone=tiny_backbone())
    with pytest.raises(ValueError, match="uint8 face crops"):
        det.fit(X.astype(np.float32), y)
    with pytest.raises(ValueError, match="both labels"):
        det.fit(X, np.zeros(20))


def test_model_file_round_trip(fitted, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(fitted, path, training={"n_real": 40, "n_fake": 40, "command": "test"})
    loaded = load_model(path, backbone=tiny_backbone())
    X, _ = toy_faces(30, seed=3)
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), rtol=1e-12)
    assert loaded.training_["command"] == "test"
    assert loaded.variant == "channel" and loaded.taps_ == fitted.taps_


def _rewrite(path, out, *, meta_edit=None, arrays_edit=None):
    """Re-save a model file with edited metadata/arrays, as an attacker could."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = json.loads(header["__metadata__"]["fakespotter"])
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    if meta_edit:
        meta_edit(meta)
    if arrays_edit:
        arrays_edit(arrays)
    save_file(arrays, str(out), metadata={"fakespotter": json.dumps(meta)})
    return out


@pytest.mark.parametrize(
    "edit, reason",
    [
        (dict(meta_edit=lambda m: m.update(format_version=99)), "newer"),
        (dict(meta_edit=lambda m: m.update(surprise=1)), "unexpected key"),
        (dict(meta_edit=lambda m: m.pop("taps")), "lacks 'taps'"),
        (dict(meta_edit=lambda m: m.update(backbone="other")), "backbone"),
        (dict(meta_edit=lambda m: m.update(variant="magic")), "variant"),
        (dict(meta_edit=lambda m: m.update(n_features=10**12)), "implausible"),
        (dict(meta_edit=lambda m: m.update(calibration=[1.0])), "calibration"),
        (dict(arrays_edit=lambda a: a["coef"].__setitem__(0, np.nan)), "NaN"),
        (dict(arrays_edit=lambda a: a.update(coef=np.zeros(3))), "shape"),
        (dict(arrays_edit=lambda a: a.update(extra=np.zeros(3))), "do not match"),
    ],
)
def test_crafted_model_files_are_refused(fitted, tmp_path, edit, reason):
    path = tmp_path / "m.safetensors"
    save_model(fitted, path)
    bad = _rewrite(path, tmp_path / "bad.safetensors", **edit)
    with pytest.raises(ModelFileError, match=reason) as info:
        load_model(bad, backbone=tiny_backbone())
    assert "\n" not in str(info.value)


def test_damaged_model_files_are_refused(fitted, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(fitted, path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) - 40],
        "header cut": data[:30],
        "empty": b"",
        "text": b"this is not a model, just text pretending\n" * 3,
        "huge header length": struct.pack("<Q", 2**60) + data[8:],
        "pickle": b"\x80\x04\x95" + b"cos\nsystem\n(S'echo pwned'\ntR." + b"\x00" * 20,
        "flipped header byte": data[:20] + bytes([data[20] ^ 0xFF]) + data[21:],
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(ModelFileError) as info:
            load_model(bad, backbone=tiny_backbone())
        assert "\n" not in str(info.value), name
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "absent.safetensors", backbone=tiny_backbone())


def test_model_for_other_weights_is_refused(fitted, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(fitted, path)
    bad = _rewrite(
        path,
        tmp_path / "bad.safetensors",
        meta_edit=lambda m: m.update(backbone="facenet", weights_sha256="f" * 64),
    )
    with pytest.raises(ModelFileError, match="other facenet weights"):
        load_model(bad)


def test_no_crops_give_no_rows(fitted):
    assert fitted.predict_proba([]).shape == (0, 2)
    assert fitted.predict(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0,)


def test_fitted_detector_pickles_without_its_caches(fitted):
    X, _ = toy_faces(30, seed=4)
    before_proba, before_features = fitted.predict_proba(X), fitted.transform(X)
    fitted.predict_proba_and_embed(X)  # fill every cache, _full_coverage_cache included
    assert {"_coverage_cache", "_full_coverage_cache"} <= set(vars(fitted.features_))
    copy = pickle.loads(pickle.dumps(fitted))
    assert not set(CoverageFeatures._CACHES) & set(vars(copy.features_))
    assert isinstance(copy.backbone, type(fitted.backbone))  # a Backbone object is a parameter
    np.testing.assert_array_equal(copy.predict_proba(X), before_proba)
    np.testing.assert_array_equal(copy.transform(X), before_features)
    proba, embeddings = copy.predict_proba_and_embed(X)
    expected = fitted.predict_proba_and_embed(X)
    np.testing.assert_array_equal(proba, expected[0])
    np.testing.assert_array_equal(embeddings, expected[1])
    # the original keeps working on its own caches
    np.testing.assert_array_equal(fitted.predict_proba(X), before_proba)


def test_pickle_drops_a_network_loaded_by_name():
    features = CoverageFeatures(backbone="sface", device="cpu")
    features._loaded_backbone, features._moved = tiny_backbone(), (0, "cpu")  # as if loaded
    state = pickle.loads(pickle.dumps(features)).__dict__
    assert "_loaded_backbone" not in state and "_moved" not in state
    assert state["backbone"] == "sface" and state["device"] == "cpu"
    det = FakeSpotter(backbone="sface", device="cpu")
    det._unfitted_features = features  # as a face cropper made before fitting leaves it
    assert "_unfitted_features" not in pickle.loads(pickle.dumps(det)).__dict__


def test_clone_gives_an_unfitted_detector_with_the_same_params(fitted):
    copy = clone(fitted)
    assert not [k for k in vars(copy) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        copy.predict_proba(toy_faces(4)[0])
    params, expected = copy.get_params(), fitted.get_params()
    assert params.keys() == expected.keys()
    assert {k: v for k, v in params.items() if k != "backbone"} == {
        k: v for k, v in expected.items() if k != "backbone"
    }
    assert params["backbone"].name == "tiny"
    unfitted = FakeSpotter(backbone="dlib", variant="layer", taps=2, Cs=(0.1,))
    assert clone(unfitted).get_params() == unfitted.get_params()


def test_n_features_in_is_the_feature_count(fitted, tmp_path):
    X, _ = toy_faces(10, seed=5)
    assert fitted.n_features_in_ == fitted.transform(X).shape[1] == len(fitted.coef_) == 18
    F, y = np.random.default_rng(0).normal(size=(40, 7)), np.arange(40) % 2
    assert FakeSpotter(cv=3).fit_features(F, y).n_features_in_ == 7
    save_model(fitted, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors", backbone=tiny_backbone()).n_features_in_ == 18


def test_fit_features_sample_weight():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    F = rng.normal(size=(60, 5)) + y[:, None] * [1.0, 0, 0, 0, 0]
    F[40:, 1] += 3 * (y[40:] * 2 - 1)  # rows 40-59 say the answer through feature 1 alone
    plain = FakeSpotter(cv=3, Cs=(1.0,)).fit_features(F, y)
    ones = FakeSpotter(cv=3, Cs=(1.0,)).fit_features(F, y, sample_weight=np.ones(60))
    np.testing.assert_allclose(ones.coef_, plain.coef_, rtol=1e-6, atol=1e-9)
    # weight on rows 40-59 moves the hyperplane towards feature 1
    w = np.r_[np.ones(40), np.full(20, 10.0)]
    heavy = FakeSpotter(cv=3, Cs=(1.0,)).fit_features(F, y, sample_weight=w)
    assert abs(heavy.coef_[1]) / abs(heavy.coef_[0]) > abs(plain.coef_[1]) / abs(plain.coef_[0])
    for bad in (np.ones(59), np.r_[np.ones(59), -1.0], np.r_[np.ones(59), np.nan]):
        with pytest.raises(ValueError, match="sample_weight"):
            FakeSpotter(cv=3, Cs=(1.0,)).fit_features(F, y, sample_weight=bad)


def _predict_proba_in_worker(detector: FakeSpotter, X: np.ndarray) -> np.ndarray:
    return detector.predict_proba(X)


@pytest.mark.slow
def test_fitted_detector_runs_in_a_spawned_worker(fitted):
    X, _ = toy_faces(20, seed=6)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        proba = pool.submit(_predict_proba_in_worker, fitted, X).result(timeout=120)
    np.testing.assert_array_equal(proba, fitted.predict_proba(X))


def test_a_backbone_passed_in_is_never_moved():
    bb = tiny_backbone()
    det = FakeSpotter(backbone=bb, device="meta")  # any device other than the backbone's
    used = det.network()
    assert next(used.model.parameters()).device.type == "meta"
    assert next(bb.model.parameters()).device.type == "cpu" and det.backbone is bb
    assert det.network() is used  # moved once, then reused

"""The update kit (``fakespotter.updatekit``): the shipped model's stand-in for its training
features file. Built from training rows, saved as data only, refused in one line by another
model or when damaged, and refitted on with new faces (``update_with_kit``).

Small data the tests make: a toy network (two convolutions, no weight files) gives the model
its fingerprint and counts; the learning tests use clusters of synthetic counts."""

from __future__ import annotations

import copy
import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from fakespotter.backbones import Backbone
from fakespotter.detector import FakeSpotter
from fakespotter.errors import UserError
from fakespotter.trainingset import TrainingFeatures
from fakespotter.updatekit import (
    FORMAT,
    KitError,
    build_kit,
    choose_rows,
    fit_real_novelty,
    kit_for_model,
    kit_path_for,
    load_kit,
    operating_point_per_source,
    quantize,
    read_kit,
    save_kit,
    update_with_kit,
)

SIZE = 16
N_FEATURES = 40


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3))


def _preprocess(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _backbone() -> Backbone:
    torch.manual_seed(7)
    return Backbone(
        name="kit-toy",
        model=_Net().eval(),
        input_size=SIZE,
        preprocess=_preprocess,
        alignment_template=np.zeros((5, 2)),
        batch_size=8,
    )


def _detector(seed: int = 0) -> FakeSpotter:
    """A toy detector whose thresholds are fitted on noise crops (``seed`` picks them)."""
    det = FakeSpotter(backbone=_backbone(), variant="channel", Cs=(0.01,))
    crops = np.random.default_rng(seed).integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
    return det.fit_thresholds(crops)


def _cluster(rng, n: int, centre: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rng.normal(centre, 3.0, (n, len(centre)))), 0, None)


# three real sources and two fake ones; fake "b" differs from the reals on other columns
# than fake "a", so a model that saw only "a" calls "b" real
BASE = np.full(N_FEATURES, 20.0)
CENTRES = {
    "real:one": BASE,
    "real:two": BASE + np.r_[np.zeros(30), np.full(10, 3.0)],
    "real:three": BASE + np.r_[np.full(10, 2.0), np.zeros(30)],
    "a": BASE + np.r_[np.zeros(10), np.full(10, 6.0), np.zeros(20)],
    "b": BASE + np.r_[np.zeros(20), np.full(10, 6.0), np.zeros(10)],
}


def _rows(rng, counts: dict[str, int], copies: bool = False) -> tuple[TrainingFeatures, list]:
    """Training rows of the named sources (``copies``: each photo with one augmented copy,
    in its group), and each row's source name."""
    F, y, names = [], [], []
    for name, n in counts.items():
        F.append(_cluster(rng, n, CENTRES[name]))
        y += [0 if name.startswith("real") else 1] * n
        names += [name] * n
    features = np.concatenate(F).astype(np.float32)
    groups = np.arange(len(features))
    if copies:
        noisy = np.clip(features + rng.normal(0, 1.0, features.shape), 0, None)
        features = np.concatenate([features, noisy.astype(np.float32)])
        groups = np.r_[groups, groups]
        y, names = y + y, names + names
    sources = sorted(set(names), key=names.index)
    return (
        TrainingFeatures(
            features,
            np.array(y),
            groups,
            np.array([sources.index(s) for s in names]),
            sources,
        ),
        names,
    )


@pytest.fixture(scope="module")
def _fitted_once():
    rng = np.random.default_rng(1)
    rows, names = _rows(
        rng, {"real:one": 120, "real:two": 60, "real:three": 40, "a": 150}, copies=True
    )
    det = _detector()
    det.fit_features(rows.features, rows.y, groups=rows.groups)
    return det, rows, names


@pytest.fixture
def fitted(_fitted_once):
    """A toy detector whose classifier knows real:one/two/three and fake 'a' (with copies),
    its training rows and their source names; the detector is the test's own copy."""
    det, rows, names = _fitted_once
    return copy.deepcopy(det), rows, names


def test_kit_round_trip_keeps_the_rows_within_half_a_step(tmp_path, fitted):
    det, rows, names = fitted
    kit = build_kit(det, rows, per_class=100, row_sources=names)
    path = tmp_path / "m.kit.safetensors"
    save_kit(path, kit)
    back = load_kit(path, det)
    assert np.array_equal(back.codes, kit.codes) and back.codes.dtype == np.uint8
    assert back.sources == ["real:one", "real:two", "real:three", "a"]
    picked = choose_rows(
        TrainingFeatures(
            rows.features, rows.y, rows.groups, np.array([back.sources.index(n) for n in names]),
            back.sources,
        ),
        100,
    )  # fmt: skip
    assert np.all(np.abs(back.features() - rows.features[picked]) <= back.step / 2 + 1e-4)
    # every source keeps the weight of all its rows in the full set
    for i, name in enumerate(back.sources):
        assert back.weight[back.source == i].sum() == pytest.approx(names.count(name), rel=1e-5)
    # class-balanced: about 100 rows a class, whole photo groups
    assert abs(int((back.y == 0).sum()) - 100) <= 8 and abs(int((back.y == 1).sum()) - 100) <= 8
    assert np.all(np.bincount(back.groups) == 2)
    # data only: a safetensors file whose header is JSON
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["fakespotter_kit"])["format"] == FORMAT


def test_a_kit_of_another_model_is_refused_in_one_line(tmp_path, fitted):
    det, rows, names = fitted
    path = tmp_path / "m.kit.safetensors"
    save_kit(path, build_kit(det, rows, per_class=50))
    other = _detector(seed=99)  # other thresholds: its counts are not comparable
    other.fit_features(rows.features, rows.y)
    with pytest.raises(KitError) as e:
        load_kit(path, other)
    assert "belongs to another model" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, UserError)  # the CLI shows it as one line


def _damaged(path, how: str) -> None:
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "not a kit":
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"\0" * 64)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        if how == "wrong dtype":
            header["codes"]["dtype"] = "F32"
        elif how == "wrong shape":
            header["weight"]["shape"] = [3]
        elif how == "bad offsets":
            header["y"]["data_offsets"] = [0, 10**9]
        elif how == "other format":
            meta = json.loads(header["__metadata__"]["fakespotter_kit"])
            header["__metadata__"]["fakespotter_kit"] = json.dumps({**meta, "format": "x/9"})
        elif how == "extra tensor":
            header["extra"] = header["y"]
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + header_len :])


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "not a kit",
        "empty",
        "wrong dtype",
        "wrong shape",
        "bad offsets",
        "other format",
        "extra tensor",
    ],
)
def test_a_damaged_kit_is_refused_in_one_line(tmp_path, fitted, how):
    det, rows, _ = fitted
    path = tmp_path / "m.kit.safetensors"
    save_kit(path, build_kit(det, rows, per_class=50))
    _damaged(path, how)
    with pytest.raises(KitError) as e:
        read_kit(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_kit_with_nan_values_is_refused(tmp_path, fitted):
    det, rows, _ = fitted
    kit = build_kit(det, rows, per_class=50)
    kit.low[3] = np.nan
    path = tmp_path / "m.kit.safetensors"
    save_kit(path, kit)
    with pytest.raises(KitError, match="NaN"):
        read_kit(path)


def test_quantize_keeps_every_value_within_half_a_step():
    f = np.random.default_rng(0).uniform(0, 3000, (50, 7)).astype(np.float32)
    f[:, 3] = 5.0  # a constant column
    codes, low, step = quantize(f)
    assert codes.dtype == np.uint8 and step[3] == 0
    assert np.all(np.abs(low + step * codes - f) <= step / 2 + 1e-3)


def test_nearest_rows_come_first_and_every_source_is_kept():
    rng = np.random.default_rng(3)
    rows, _ = _rows(rng, {"real:one": 200, "real:two": 10, "a": 100})
    margin = rng.normal(size=len(rows))
    picked = choose_rows(rows, 40, margin=margin)
    assert set(rows.source[picked]) == {0, 1, 2}  # the small source still has rows
    ones = np.flatnonzero(rows.source == 0)
    mine = picked[rows.source[picked] == 0]
    # of real:one, the rows nearest the boundary
    assert set(mine) == set(ones[np.argsort(margin[ones])[: len(mine)]])


def _held_out(rng, name: str, n: int = 200) -> np.ndarray:
    return _cluster(rng, n, CENTRES[name]).astype(np.float32)


@pytest.mark.slow
def test_update_with_kit_learns_a_new_generator_and_keeps_the_old(fitted):
    det, rows, names = fitted
    rng = np.random.default_rng(11)
    test = {name: _held_out(rng, name) for name in CENTRES}
    real = rows.y == 0
    fit_real_novelty(det, rows.features[real], rows.source[real])
    novelty_before = det.novelty(test["b"])
    assert (det.predict(features=test["b"]) == 1).mean() < 0.5  # unseen: mostly "real"
    kit = build_kit(det, rows, per_class=120, row_sources=names)
    new_rows, _ = _rows(rng, {"b": 80})
    info = update_with_kit(det, kit, new_rows)
    assert info["rows"]["b"] == 80 and info["C"] == 0.01
    caught = {n: float((det.predict(features=test[n]) == 1).mean()) for n in CENTRES}
    assert caught["b"] >= 0.9 and caught["a"] >= 0.9
    for name in ("real:one", "real:two", "real:three"):
        assert caught[name] <= 0.06, caught
    # the operating point holds every real source's out-of-fold photos to 1%
    point = info["operating_point"]
    assert det.threshold_ == point["threshold"]
    for name in ("real:one", "real:two", "real:three"):
        assert point["per_source"][name]["called_fake"] <= 0.01
    # the model's novelty signal (fitted on all its reals) is kept, and still measures the same
    assert np.allclose(det.novelty(test["b"]), novelty_before)


@pytest.mark.slow
def test_the_update_is_the_fit_on_the_kit_expressed_in_the_model_scaler(fitted):
    det, rows, names = fitted
    columns = np.arange(0, N_FEATURES, 2)
    kit = build_kit(det, rows, per_class=120, columns=columns, row_sources=names)
    new_rows, _ = _rows(np.random.default_rng(2), {"b": 30})
    reference = copy.deepcopy(det)
    reference.Cs = (det.C_,)
    narrow = TrainingFeatures(
        new_rows.features[:, columns], new_rows.y, new_rows.groups, new_rows.source, ["b"]
    )
    together = kit.rows().extended(narrow)
    reference.fit_features(
        together.features,
        together.y,
        groups=together.groups,
        sample_weight=np.r_[kit.weight, np.ones(30)],
    )
    scaler = det.classifier_.scaler_mean_.copy(), det.classifier_.scaler_scale_.copy()
    update_with_kit(det, kit, new_rows, operating_point=False)
    x = _held_out(np.random.default_rng(4), "b", 20)
    assert np.allclose(
        det.decision_function(features=x), reference.decision_function(features=x[:, columns])
    )
    assert np.array_equal(det.classifier_.scaler_mean_, scaler[0]) and np.array_equal(
        det.classifier_.scaler_scale_, scaler[1]
    )


@pytest.mark.slow
def test_new_faces_can_weigh_as_much_as_a_stored_source(fitted):
    det, rows, names = fitted
    kit = build_kit(det, rows, per_class=120, row_sources=names)
    rng = np.random.default_rng(12)
    test_b = _held_out(rng, "b")
    new_rows, _ = _rows(rng, {"b": 10})
    plain, weighed = copy.deepcopy(det), copy.deepcopy(det)
    update_with_kit(plain, kit, new_rows, operating_point=False)
    update_with_kit(weighed, kit, new_rows, new_weight="source", operating_point=False)
    # the one stored fake source weighs 300 rows; 10 new faces at 30 each weigh as much
    assert (
        weighed.decision_function(features=test_b) > plain.decision_function(features=test_b)
    ).mean() > 0.9


@pytest.mark.slow
def test_new_real_photos_join_as_a_real_source(fitted):
    det, rows, names = fitted
    kit = build_kit(det, rows, per_class=120, row_sources=names)
    rng = np.random.default_rng(5)
    # the user's camera: reals that look like fake "a" on some columns (the old model's
    # false alarms); --real teaches it they are real
    shifted = _cluster(
        rng, 60, CENTRES["real:one"] + np.r_[np.zeros(10), np.full(10, 3.0), np.zeros(20)]
    )
    new = TrainingFeatures(
        shifted.astype(np.float32), np.zeros(60, int), np.arange(60), np.zeros(60, int), ["real"]
    )
    held = _cluster(
        rng, 100, CENTRES["real:one"] + np.r_[np.zeros(10), np.full(10, 3.0), np.zeros(20)]
    )
    before = float((det.predict(features=held.astype(np.float32)) == 1).mean())
    info = update_with_kit(det, kit, new)
    after = float((det.predict(features=held.astype(np.float32)) == 1).mean())
    assert "real" in info["operating_point"]["per_source"] and after < before


@pytest.mark.slow
def test_a_kit_of_some_columns_gives_a_full_width_model(fitted):
    det, rows, names = fitted
    columns = np.arange(0, N_FEATURES, 2)
    kit = build_kit(det, rows, per_class=120, columns=columns, row_sources=names)
    assert kit.codes.shape[1] == len(columns) and kit.n_features == N_FEATURES
    new_rows, _ = _rows(np.random.default_rng(2), {"b": 30})
    update_with_kit(det, kit, new_rows)
    assert det.n_features_in_ == N_FEATURES and len(det.coef_) == N_FEATURES
    others = np.setdiff1d(np.arange(N_FEATURES), columns)
    assert np.all(det.coef_[others] == 0)
    # the columns it does not store change nothing
    x = new_rows.features[:5].copy()
    y = x.copy()
    y[:, others] += 1000
    assert np.allclose(det.decision_function(features=x), det.decision_function(features=y))


def test_new_faces_of_another_width_are_refused(fitted):
    det, rows, _ = fitted
    kit = build_kit(det, rows, per_class=50)
    wrong = TrainingFeatures(
        np.zeros((4, 7), np.float32), np.ones(4, int), np.arange(4), np.zeros(4, int), ["b"]
    )
    with pytest.raises(KitError, match="features"):
        update_with_kit(det, kit, wrong)


def test_the_kit_beside_a_model_is_found(tmp_path, fitted):
    det, rows, _ = fitted
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    assert kit_path_for(model) is None
    with pytest.raises(KitError, match="no update kit beside this model") as e:
        kit_for_model(model, det)
    assert "\n" not in str(e.value) and "--features" in str(e.value)
    save_kit(tmp_path / "m.kit.safetensors", build_kit(det, rows, per_class=50))
    assert kit_path_for(model) == tmp_path / "m.kit.safetensors"
    assert len(kit_for_model(model, det)) > 0


def test_operating_point_is_held_by_the_strictest_real_source():
    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(0, 0.3, 300), rng.uniform(0, 0.7, 100), rng.uniform(0.6, 1, 200)]
    y = np.r_[np.zeros(400, int), np.ones(200, int)]
    source = np.r_[np.zeros(300, int), np.ones(100, int), np.full(200, 2)]
    point = operating_point_per_source(p, y, source, ["real:a", "real:b", "fake"])
    assert point["per_source"]["real:a"]["called_fake"] <= 0.01
    assert point["per_source"]["real:b"]["called_fake"] <= 0.01
    assert point["threshold"] > 0.6  # set by real:b's spread, not by the pooled reals


def test_novelty_from_real_faces_holds_every_real_source(fitted):
    det, rows, names = fitted
    real = np.flatnonzero(rows.y == 0)
    info = fit_real_novelty(det, rows.features[real], rows.source[real])
    assert info["reference"] == "real faces only"
    rng = np.random.default_rng(21)
    for name in ("real:one", "real:two", "real:three"):  # fresh photos of each source
        flagged = det.novelty(_held_out(rng, name)) > det.novelty_threshold_
        assert flagged.mean() <= 0.05, name
    far = _cluster(rng, 50, BASE + 15.0).astype(np.float32)  # unlike every real source
    assert (det.novelty(far) > det.novelty_threshold_).mean() >= 0.9


@pytest.mark.slow
def test_held_out_photos_in_the_kit_choose_the_operating_point(tmp_path, fitted):
    det, rows, names = fitted
    rng = np.random.default_rng(31)
    val_counts = {"real:one": 100, "real:two": 50, "a": 100}
    val_rows, _ = _rows(rng, val_counts)
    kit = build_kit(
        det, rows, per_class=120, row_sources=names, val=(val_rows.features, val_rows.y)
    )
    path = tmp_path / "m.kit.safetensors"
    save_kit(path, kit)
    back = load_kit(path, det)
    assert back.val_codes is not None and back.val_codes.shape == (250, N_FEATURES)
    assert np.all(np.abs(back.val_features() - val_rows.features) <= back.step / 2 + 1e-4)
    new_rows, _ = _rows(rng, {"b": 80})
    info = update_with_kit(det, back, new_rows)
    point = info["operating_point"]
    assert "held-out photos" in point["chosen_on"] and det.threshold_ == point["threshold"]
    # as train chooses it: at most 1% of the held-out real photos (as stored) called fake;
    # the 8-bit codes move a score at the boundary by little
    p_val = det.predict_proba(features=back.val_features())[:, 1]
    assert np.mean(p_val[val_rows.y == 0] >= det.threshold_) <= 0.01
    p_exact = det.predict_proba(features=val_rows.features)[:, 1]
    assert np.mean(p_exact[val_rows.y == 0] >= det.threshold_) <= 0.02
    # new real photos of another look: their own out-of-fold photos guard the threshold
    shift = np.r_[np.zeros(10), np.full(10, 3.0), np.zeros(20)]
    camera = _cluster(rng, 60, CENTRES["real:one"] + shift).astype(np.float32)
    mine = TrainingFeatures(camera, np.zeros(60, int), np.arange(60), np.zeros(60, int), ["real"])
    info = update_with_kit(copy.deepcopy(det), back, mine)
    assert info["operating_point"]["new_real_sources"]["real"]["called_fake"] <= 0.01


def test_a_kit_whose_held_out_labels_are_damaged_is_refused(tmp_path, fitted):
    det, rows, _ = fitted
    val = (rows.features[:20], np.r_[np.zeros(10, int), np.ones(10, int)])
    path = tmp_path / "m.kit.safetensors"
    save_kit(path, build_kit(det, rows, per_class=50, val=val))
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    begin = 8 + header_len + header["val_y"]["data_offsets"][0]
    data[begin] = 7  # a label that is neither real nor fake
    path.write_bytes(bytes(data))
    with pytest.raises(KitError, match="held-out labels"):
        read_kit(path)

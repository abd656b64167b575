"""A model file must fit its network (issue #27 item 11): arrays that agree with each other
but not with the features the backbone and criterion give are refused at load in one line,
not at the first face (detect) or at start-up (serve) with a traceback; and a model whose
coefficients overflow gives no score, no label and says why, never NaN labelled real."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_detector import _rewrite, tiny_backbone, toy_faces

from fakespotter.classifier import CalibratedLinearSVM
from fakespotter.detector import FakeSpotter
from fakespotter.modelfile import ModelFileError
from fakespotter.persistence import load_model, save_model
from fakespotter.rows import NO_FINITE_SCORE, face_rows

N = 10  # features the crafted files claim


def _resized(arrays: dict, n: int = N) -> None:
    """Every per-feature array made n columns long, consistently (novelty included)."""
    for name in ("scaler_mean", "scaler_scale", "coef"):
        arrays[name] = np.resize(arrays[name], n)
    if "novelty_components" in arrays:
        c = len(arrays["novelty_components"])
        arrays["novelty_components"] = np.resize(arrays["novelty_components"], (c, n))


def _crafted(src: Path, out: Path, n: int = N) -> Path:
    return _rewrite(
        src, out, meta_edit=lambda m: m.update(n_features=n), arrays_edit=lambda a: _resized(a, n)
    )


@pytest.mark.parametrize(
    "variant, width", [("layer", 3), ("channel", 18), ("kmultisection", 12), ("embedding", 8)]
)
def test_a_feature_count_the_network_does_not_give_is_refused_at_load(tmp_path, variant, width):
    X, y = toy_faces(40)
    det = FakeSpotter(backbone=tiny_backbone(), variant=variant, cv=3, Cs=(0.1,)).fit(X, y)
    assert len(det.coef_) == width
    path = tmp_path / "m.safetensors"
    save_model(det, path)
    assert len(load_model(path, backbone=tiny_backbone()).coef_) == width  # the honest file

    for n in (N, width + 1, 1):
        if n == width:
            continue
        bad = _crafted(path, tmp_path / f"bad{n}.safetensors", n)
        with pytest.raises(ModelFileError) as info:
            load_model(bad, backbone=tiny_backbone())
        message = str(info.value)
        assert message == f"model file has {n} features but tiny with {variant} gives {width}"


def test_taps_the_network_lacks_or_repeats_are_refused_at_load(tmp_path):
    X, y = toy_faces(40)
    det = FakeSpotter(backbone=tiny_backbone(), variant="layer", cv=3, Cs=(0.1,)).fit(X, y)
    path = tmp_path / "m.safetensors"
    save_model(det, path)
    first = det.taps_[0]
    for taps, reason in [(["nope", *det.taps_[1:]], "no layer 'nope'"), ([first] * 3, "twice")]:
        bad = _rewrite(
            path, tmp_path / "bad.safetensors", meta_edit=lambda m, taps=taps: m.update(taps=taps)
        )
        with pytest.raises(ModelFileError, match=reason) as info:
            load_model(bad, backbone=tiny_backbone())
        assert "\n" not in str(info.value)


def _with_coef(det: FakeSpotter, coef: np.ndarray, scale: np.ndarray | None = None):
    """The detector with a crafted classifier (a model file can hold any finite numbers)."""
    clf = det.classifier_
    crafted = CalibratedLinearSVM.fitted(
        coef=coef,
        intercept=clf.intercept_,
        scaler_mean=clf.scaler_mean_,
        scaler_scale=clf.scaler_scale_ if scale is None else scale,
        calibration=clf.calibration_,
        C=clf.C_,
        cv_auc=clf.cv_auc_,
    )
    return FakeSpotter.from_parts(det.features_, crafted, det.novelty_, det.operating_point_)


def _overflowing(det: FakeSpotter) -> FakeSpotter:
    """Huge but finite coefficients of both signs: the decision is inf - inf = NaN."""
    n = len(det.coef_)
    return _with_coef(det, np.where(np.arange(n) % 2 == 0, 1e308, -1e308), np.full(n, 1e-3))


def test_a_face_with_no_finite_score_gets_no_label_and_an_error(tmp_path):
    X, y = toy_faces(40)
    det = FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3, Cs=(0.1,)).fit(X, y)
    path = tmp_path / "m.safetensors"
    save_model(_overflowing(det), path)  # a model file can hold such numbers: all finite
    loaded = load_model(path, backbone=tiny_backbone())
    with np.errstate(all="raise"):  # and no RuntimeWarning on the way
        found = loaded.assess(X[:6])
    assert np.isnan(found["p_fake"]).all()
    assert found["labels"] == [None] * 6
    assert found["errors"] == [NO_FINITE_SCORE] * 6
    # a photo's row: no p_fake, no label, the reason
    faces = [SimpleNamespace(box=(0.0, 0.0, 9.0, 9.0), warnings=[], score=0.9, size=9.0)]
    [row] = face_rows("p.jpg", faces, found["p_fake"][:1], labels=found["labels"][:1])
    assert (row.p_fake, row.label, row.error) == (None, None, NO_FINITE_SCORE)
    assert loaded.labels(np.array([np.nan, 0.9])) == [None, "fake"]
    # an infinite decision (all coefficients one sign) is no score either, not p = 1
    loaded = _with_coef(loaded, np.abs(loaded.coef_))
    found = loaded.assess(X[:2])
    assert np.isnan(found["p_fake"]).all() and found["labels"] == [None, None]
    # an honest model: every face scored, no error
    honest = FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3, Cs=(0.1,)).fit(X, y)
    found = honest.assess(X[:4])
    assert np.isfinite(found["p_fake"]).all() and found["errors"] == [None] * 4
    assert None not in found["labels"]


def test_a_video_scored_without_a_finite_score_is_an_error_not_real(tmp_path):
    pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
    from test_video import ScriptedCropper, write_grey_video

    from fakespotter.photos import video_rows

    X, y = toy_faces(40)
    det = _overflowing(
        FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3, Cs=(0.1,)).fit(X, y)
    )
    clip = write_grey_video(tmp_path / "clip.mp4", 3)

    class Faces(ScriptedCropper):
        def __call__(self, image):
            faces = super().__call__(image)
            for f in faces:
                f.crop = X[0]
            return faces

    cropper = Faces([[(0, 0, 16, 16)]] * 3)
    [row] = video_rows(det, cropper, clip, fps=10)
    assert row.error == NO_FINITE_SCORE and row.p_fake is None and row.label is None


# -- through the command line and the server (the session's tiny dlib model) ----------------


@pytest.mark.slow
def test_detect_and_serve_refuse_the_file_in_one_line(tiny_model, tmp_path):
    from click.testing import CliRunner

    from fakespotter.cli import main

    width = len(load_model(tiny_model).coef_)  # one count per tapped layer of dlib
    bad = _crafted(tiny_model, tmp_path / "bad.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (150, 150), (128, 128, 128)).save(photos / "grey.png")
    result = CliRunner().invoke(main, ["detect", str(photos), "--aligned", "--model", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"Error: model file has {N} features but dlib with layer gives {width}"]

    pytest.importorskip("fastapi")
    from fakespotter.serve.app import create_app

    with pytest.raises(ModelFileError, match=f"has {N} features but dlib with layer gives {width}"):
        create_app(bad, aligned=True)

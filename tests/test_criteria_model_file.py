"""Model files and coverage criteria: files written before criteria were pluggable still load,
and a criterion with several parameters per tap round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from test_detector import _rewrite, tiny_backbone, toy_faces

from fakespotter import modelfile
from fakespotter.criteria import get_criterion
from fakespotter.detector import FakeSpotter
from fakespotter.modelfile import ModelFileError
from fakespotter.persistence import default_model_path, load_model, save_model


def test_shipped_model_loads_with_its_criterions_thresholds():
    try:
        path = default_model_path()
    except FileNotFoundError:
        pytest.skip("this checkout has no shipped model")
    det = load_model(path)
    criterion = get_criterion(det.variant)
    assert det.thresholds_.shape == (len(det.taps_), *criterion.param_shape) or (
        criterion.param_shape == (1,) and det.thresholds_.shape == (len(det.taps_),)
    )


@pytest.mark.parametrize("variant", ["layer", "channel", "embedding"])
def test_a_format_1_file_as_written_before_loads(tmp_path, variant):
    """The metadata and tensors exactly as save_model wrote them before (one threshold per tap)."""
    X, y = toy_faces(40)
    det = FakeSpotter(backbone=tiny_backbone(), variant=variant, cv=3, Cs=(0.1,)).fit(X, y)
    meta = {
        "package_version": "0.1.0",
        "backbone": "tiny",
        "weights_sha256": "0" * 64,
        "variant": variant,
        "neuron": "raw",
        "taps": list(det.taps_),
        "n_features": len(det.coef_),
        "C": 0.1,
        "cv_auc": 0.9,
        "calibration": list(det.classifier_.calibration_),
        "training": {},
    }
    arrays = {
        "thresholds": np.asarray(det.thresholds_, np.float64).reshape(len(det.taps_)),
        "scaler_mean": det.classifier_.scaler_mean_,
        "scaler_scale": det.classifier_.scaler_scale_,
        "coef": det.coef_,
        "intercept": np.array([det.classifier_.intercept_]),
    }
    path = tmp_path / "old.safetensors"
    modelfile.save(path, meta, arrays)
    loaded = load_model(path, backbone=tiny_backbone())
    np.testing.assert_array_equal(loaded.predict_proba(X), det.predict_proba(X))


@pytest.mark.parametrize("variant", ["kmultisection", "kmultisection-channel"])
def test_kmultisection_model_round_trip(tmp_path, variant):
    X, y = toy_faces(60)
    det = FakeSpotter(backbone=tiny_backbone(), variant=variant, cv=3).fit(X, y)
    channel = FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3).fit(X, y)
    per_tap = len(channel.coef_) if variant.endswith("channel") else 3
    assert det.thresholds_.shape == (3, 4) and len(det.coef_) == 4 * per_tap
    # the z = 0 level is the paper's count, so both give the same layer counts
    np.testing.assert_array_equal(
        det.layer_counts(det.transform(X)), channel.layer_counts(channel.transform(X))
    )
    path = tmp_path / "k.safetensors"
    save_model(det, path)
    loaded = load_model(path, backbone=tiny_backbone())
    np.testing.assert_array_equal(loaded.thresholds_, det.thresholds_)
    np.testing.assert_allclose(loaded.predict_proba(X), det.predict_proba(X), rtol=1e-12)

    # a kmultisection file with one threshold per tap is refused before any tensor is read
    bad = _rewrite(
        path,
        tmp_path / "bad.safetensors",
        arrays_edit=lambda a: a.update(thresholds=a["thresholds"][:, 0].copy()),
    )
    with pytest.raises(ModelFileError, match="shape"):
        load_model(bad, backbone=tiny_backbone())

"""What moved a face's score, per layer (issue #27, 24): each tapped layer's part of the linear
SVM's decision, and the spread of those parts over the real and the fake training faces.

The page's old chart drew a face's active neurons per layer against the real and fake
averages: the three lines nearly coincide on every layer, because what decides is per
channel and per threshold, not the per-layer totals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fakespotter.evaluation.layers import (
    LAYER_DECISION_KEY,
    decision_per_layer,
    decision_ranges,
)


def _linear(n_features: int = 5):
    """A stand-in detector: scaler, SVM weights and two layers' columns."""
    classifier = SimpleNamespace(
        scaler_mean_=np.arange(n_features, dtype=np.float64),
        scaler_scale_=np.full(n_features, 2.0),
        coef_=np.array([1.0, -1.0, 0.5, 0.0, 2.0])[:n_features],
        intercept_=0.25,
    )
    return SimpleNamespace(
        classifier_=classifier,
        feature_slices=lambda: {"conv1": slice(0, 2), "fc": slice(2, 5)},
    )


def test_each_layers_part_is_its_columns_weighted_standardized_features():
    det = _linear()
    F = np.array([[2.0, 1.0, 6.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    parts = decision_per_layer(det, F)
    # z = (F - mean) / 2: face 0 -> [1, 0, 2, 0, 0]; face 1 (the average) -> 0 everywhere
    assert parts.tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_decision_ranges_are_the_real_and_fake_spreads_per_layer():
    det = _linear()
    rng = np.random.default_rng(0)
    F = rng.normal(size=(200, 5)) * 3
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    F[y == 1, 4] += 5  # fakes: more on a column the SVM weighs towards fake
    ranges = decision_ranges(det, F, y)
    parts = decision_per_layer(det, F)
    assert ranges["layers"] == ["conv1", "fc"] and ranges["percentiles"] == [10, 90]
    expected = np.percentile(parts[y == 1], [10, 90], axis=0).T
    np.testing.assert_allclose(ranges["fake"], expected)
    assert ranges["fake"][1][0] > ranges["real"][1][0]  # the fc layer tells them apart


@pytest.fixture(scope="module")
def fitted():
    """A `channel` detector on dlib's untrained network (no weights): thresholds from random
    pictures, a classifier fitted on their features."""
    from fakespotter.backbones import get_backbone
    from fakespotter.detector import FakeSpotter

    backbone = get_backbone("dlib").untrained()
    size = backbone.input_size
    X = np.random.default_rng(0).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    X[4:] = X[4:] // 4 + 96  # the second half: flat, low-contrast pictures
    det = FakeSpotter(backbone=backbone, variant="channel", progress=False, Cs=(1.0,), cv=2)
    det.fit_thresholds(X)
    F = det.transform(X)
    y = np.r_[np.zeros(4, int), np.ones(4, int)]
    det.fit_features(F, y)
    return det, X, F, y


@pytest.mark.slow
def test_the_parts_and_the_intercept_add_up_to_the_svm_decision(fitted):
    det, _, F, _ = fitted
    parts = decision_per_layer(det, F)
    assert parts.shape == (len(F), len(det.taps_))
    np.testing.assert_allclose(
        parts.sum(1) + det.classifier_.intercept_, det.decision_function(features=F)
    )


@pytest.mark.slow
def test_layer_info_shows_stored_ranges_only_for_this_models_layers(fitted):
    from fakespotter.serve.analysis import layer_info

    det, _, F, y = fitted
    det.training_ = {}
    info = layer_info(det)
    assert info is not None and info.decision_real is None and info.decision_fake is None
    # the average training face: every part 0, and the score the parts move a face from
    mean = det.classifier_.scaler_mean_[None, :]
    assert not decision_per_layer(det, mean).any()
    assert info.average_p_fake == pytest.approx(det.predict_proba(features=mean)[0, 1])
    stored = decision_ranges(det, F, y)
    det.training_ = {LAYER_DECISION_KEY: stored}
    info = layer_info(det)
    assert info is not None
    assert info.decision_real == stored["real"] and info.decision_fake == stored["fake"]
    assert info.as_dict()["decision_fake"] == stored["fake"]
    det.training_ = {LAYER_DECISION_KEY: dict(stored, layers=stored["layers"][:-1])}
    assert layer_info(det).decision_real is None  # another model's layers: not shown
    det.training_ = {LAYER_DECISION_KEY: dict(stored, real=[[0.0, "x"]] * len(det.taps_))}
    assert layer_info(det).decision_real is None


@pytest.mark.slow
def test_each_web_row_carries_its_own_faces_parts_and_keeps_its_counts(fitted):
    from fakespotter.faces.pipeline import FaceCrop
    from fakespotter.serve.analysis import FaceScorer, per_layer

    det, X, F, _ = fitted
    boxes = [(300.0, 0.0, 400.0, 100.0), (0.0, 0.0, 100.0, 100.0)]  # found right to left
    faces = [FaceCrop(b, 0.99, np.zeros((5, 2)), X[i], size=100) for i, b in enumerate(boxes)]
    scorer = FaceScorer(det, lambda image: faces)
    try:
        rows = scorer.score(np.zeros((8, 8, 3), np.uint8), "two.png")
    finally:
        scorer.close()
    parts, counts = decision_per_layer(det, F[:2]), per_layer(det, F[:2])
    for row, i in zip(rows, (1, 0), strict=True):  # rows go left to right
        assert row["layer_decision"] == pytest.approx(parts[i].tolist())
        assert row["layer_counts"] == [float(v) for v in counts[i]]

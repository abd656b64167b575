"""Per-layer views of a fitted detector's classifier: the report's layer chart (the paper's
Figure 3; the activated-neuron counts come from ``FakeSpotter.layer_counts``) and the web
page's "what moved this face's score" chart (:func:`decision_per_layer`)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "LAYER_DECISION_KEY",
    "classifier_weight_per_layer",
    "decision_per_layer",
    "decision_ranges",
]

# training metadata: the spread of decision_per_layer over the real and the fake training
# faces (decision_ranges), for the web page; absent from older model files
LAYER_DECISION_KEY = "layer_decision"
DECISION_PERCENTILES = (10, 90)


def classifier_weight_per_layer(detector) -> tuple[np.ndarray, str]:
    """One classifier weight per tapped layer, plus an axis label saying what it is.

    Layer variant: the linear SVM weight of each layer's (standardized) count; positive
    means more activated neurons push towards "fake".  Channel variant: the sum of the
    absolute channel weights of each layer, i.e. how much the classifier uses that layer.
    """
    coef = np.asarray(detector.coef_, dtype=np.float64)
    if detector.variant == "layer":
        return coef.copy(), "SVM weight (standardized count; + means fake)"
    slices = detector.feature_slices()
    weights = np.array([np.abs(coef[s]).sum() for s in slices.values()])
    return weights, "sum of |SVM weight| over the layer's channels"


def decision_per_layer(detector, features: np.ndarray) -> np.ndarray:
    """N x L: each tapped layer's part of the linear SVM's decision for each face.

    The decision is ``w . z + b`` with ``z`` the standardized features, so the part of layer
    ``l`` is the sum of ``w_j * z_j`` over its feature columns ``j``: the parts and the
    intercept add up to ``decision_function``. Positive pushes towards fake, negative towards
    real; the average training face (``z = 0``) has 0 on every layer. Layer order is
    ``feature_slices``' (= ``taps_``, as ``layer_counts``). Coverage variants only.
    """
    F = np.asarray(features, dtype=np.float64)
    clf = detector.classifier_
    mean, scale = np.asarray(clf.scaler_mean_), np.asarray(clf.scaler_scale_)
    coef = np.asarray(clf.coef_, dtype=np.float64)
    # one layer at a time: a whole N x features matrix of products would not fit for big N
    parts = [((F[:, s] - mean[s]) / scale[s]) @ coef[s] for s in detector.feature_slices().values()]
    return np.stack(parts, axis=1) if parts else np.zeros((len(F), 0))


def decision_ranges(detector, features: np.ndarray, y) -> dict:
    """The 10th and 90th percentile of each layer's :func:`decision_per_layer` over the real
    (y = 0) and the fake (y = 1) rows of ``features``: what the web page shows a face's parts
    against. Stored in a model file's training metadata under ``LAYER_DECISION_KEY``."""
    parts, y = decision_per_layer(detector, features), np.asarray(y)

    def spread(rows: np.ndarray) -> list[list[float]]:
        lo, hi = np.percentile(rows, DECISION_PERCENTILES, axis=0)
        return [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]

    return {
        "layers": list(detector.feature_slices()),
        "percentiles": list(DECISION_PERCENTILES),
        "real": spread(parts[y == 0]),
        "fake": spread(parts[y == 1]),
    }

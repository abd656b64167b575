"""Per-layer view of a fitted detector's classifier, for the report's layer chart (the
paper's Figure 3; the activated-neuron counts come from ``FakeSpotter.layer_counts``)."""

from __future__ import annotations

import numpy as np

__all__ = ["classifier_weight_per_layer"]


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

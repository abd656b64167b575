"""Per-layer views of a fitted detector: activated-neuron counts and classifier weights.

They feed the report's layer chart (the paper's Figure 3): how many neurons of each layer
fire above the layer threshold for real vs fake faces, and how much the classifier relies on
each layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["classifier_weight_per_layer", "counts_per_layer", "detector_feature_slices"]


def counts_per_layer(features: np.ndarray, feature_slices: Mapping[str, slice]) -> np.ndarray:
    """N x L activated-neuron counts from N x F coverage features (layer or channel variant).

    A channel feature counts one channel's neurons above the *layer* threshold, so the sum
    over a layer's channels is that layer's count, the same number the layer variant gives.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be N x F, got shape {features.shape}")
    columns = [features[:, s].sum(axis=1) for s in feature_slices.values()]
    if not columns:
        return np.zeros((len(features), 0))
    return np.stack(columns, axis=1)


def detector_feature_slices(detector) -> dict[str, slice]:
    """Tap name -> columns of ``detector.transform(X)`` for a fitted layer/channel FakeSpotter."""
    from fakespotter.coverage import NeuronCoverage

    if detector.variant == "embedding":
        raise ValueError("an embedding model has no per-layer coverage")
    backbone = detector._backbone()
    by_name = {tap.name: tap for tap in backbone.taps()}
    taps = [by_name[name] for name in detector.taps_]
    coverage = NeuronCoverage(backbone.model, taps, detector.variant, detector.neuron,
                              backbone.activations)
    return dict(coverage.feature_slices)


def classifier_weight_per_layer(detector) -> tuple[np.ndarray, str]:
    """One classifier weight per tapped layer, plus an axis label saying what it is.

    Layer variant: the linear SVM weight of each layer's (standardized) count; positive
    means more activated neurons push towards "fake".  Channel variant: the sum of the
    absolute channel weights of each layer, i.e. how much the classifier uses that layer.
    """
    coef = np.asarray(detector.coef_, dtype=np.float64)
    if detector.variant == "layer":
        return coef.copy(), "SVM weight (standardized count; + means fake)"
    slices = detector_feature_slices(detector)
    weights = np.array([np.abs(coef[s]).sum() for s in slices.values()])
    return weights, "sum of |SVM weight| over the layer's channels"

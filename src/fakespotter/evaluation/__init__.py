"""Evaluation a reviewer can check: metrics per class and group, robustness, charts.

Charts need matplotlib (the ``report`` extra); everything else works without it.
"""

from fakespotter.evaluation.groups import groups_from_manifest, groups_from_prefix
from fakespotter.evaluation.layers import classifier_weight_per_layer
from fakespotter.evaluation.perturb import (
    Perturbation,
    image_rng,
    parse_perturbations,
    perturbed_scores,
)
from fakespotter.evaluation.report import group_metrics, write_report

__all__ = [
    "Perturbation",
    "classifier_weight_per_layer",
    "group_metrics",
    "groups_from_manifest",
    "groups_from_prefix",
    "image_rng",
    "parse_perturbations",
    "perturbed_scores",
    "write_report",
]

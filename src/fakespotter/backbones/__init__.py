"""Face-recognition networks whose neurons fakespotter reads."""

from fakespotter.backbones.registry import (
    BACKBONES,
    DETECTORS,
    Backbone,
    BackboneSpec,
    DetectorSpec,
    Lazy,
    backbones_with_weights,
    get_backbone,
    get_detector,
    register_backbone,
    register_detector,
    unregister_backbone,
    unregister_detector,
)

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "Backbone",
    "BackboneSpec",
    "DetectorSpec",
    "Lazy",
    "backbones_with_weights",
    "get_backbone",
    "get_detector",
    "register_backbone",
    "register_detector",
    "unregister_backbone",
    "unregister_detector",
]

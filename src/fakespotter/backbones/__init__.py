"""Face-recognition networks whose neurons fakespotter reads."""

from fakespotter.backbones.registry import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    backbones_with_weights,
    get_backbone,
    register_backbone,
    unregister_backbone,
)
from fakespotter.lazy import Lazy  # for plug-ins' specs: a field imported on first use

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "Lazy",
    "backbones_with_weights",
    "get_backbone",
    "register_backbone",
    "unregister_backbone",
]

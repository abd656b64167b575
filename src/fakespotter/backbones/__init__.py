"""Face-recognition networks whose neurons fakespotter reads."""

from fakespotter.backbones.registry import BACKBONES, Backbone, BackboneSpec, get_backbone

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "get_backbone"]

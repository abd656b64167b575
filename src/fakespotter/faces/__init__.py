"""Face pipeline: load an image, detect faces (MTCNN), align them to a template."""

from fakespotter.faces.align import (
    estimate_similarity,
    warp_face,
)
from fakespotter.faces.io import (
    MAX_BYTES,
    MAX_PIXELS,
    ImageError,
    check_size,
    load_image,
    load_image_bytes,
)
from fakespotter.faces.mtcnn import MTCNN, Face, nms

__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "MTCNN",
    "Face",
    "ImageError",
    "check_size",
    "estimate_similarity",
    "load_image",
    "load_image_bytes",
    "nms",
    "warp_face",
]

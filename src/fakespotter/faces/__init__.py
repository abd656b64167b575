"""Face pipeline: load an image, find faces (a registered face detector: ``faces.registry``),
align them to a template (``faces.pipeline``). Importing the package imports no torch: the
detectors' modules (``mtcnn``, ``yunet``) are imported when one is built."""

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

__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "ImageError",
    "check_size",
    "estimate_similarity",
    "load_image",
    "load_image_bytes",
    "warp_face",
]

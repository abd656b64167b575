"""Load any image file as an H x W x 3 uint8 RGB array, or fail with a one-line reason.

Choices:
- EXIF orientation is applied, so the array looks like the photo does in a viewer.
- Transparency (RGBA, LA, palette with a transparent colour) is composited on WHITE,
  which is how viewers and browsers show such images; dropping alpha would instead
  expose whatever colour hides under transparent pixels (often black or garbage).
- 16-bit images are scaled to 8 bits (not clipped).
- Animated GIF/WebP/APNG: the first frame.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fakespotter.errors import UserError, first_line

MAX_PIXELS = 50_000_000
"""Default limit on width * height, checked from the header before decoding."""

MAX_BYTES = 100 * 1024 * 1024
"""Default limit on the file size (100 MiB)."""


class ImageError(UserError):
    """An image could not be loaded; ``reason`` is a short human sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_image(
    path: str | os.PathLike[str],
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array; raise ImageError if unreadable."""
    path = Path(path)
    _check_file(path, max_bytes)
    return _decode(path, max_pixels)


def load_image_bytes(
    data: bytes, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES
) -> np.ndarray:
    """:func:`load_image` for a file's bytes (read from a URL, an archive, ...)."""
    check_size(len(data), max_bytes)
    return _decode(io.BytesIO(data), max_pixels)


def check_size(size: int, max_bytes: int = MAX_BYTES) -> None:
    """ImageError for a file of ``size`` bytes that is empty or over ``max_bytes``."""
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    if size > max_bytes:
        raise ImageError(
            f"file too large: {size:,} bytes (limit {max_bytes:,}; --max-bytes raises it)"
        )


def _decode(source, max_pixels: int) -> np.ndarray:
    try:
        # Pillow warns (or raises) on pixel counts above its own global limit; treat both as ours.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"image too large: {width}x{height} pixels (limit {max_pixels:,}; "
                        "--max-pixels raises it)"
                    )
                im.seek(0)  # first frame of an animation
                im.load()
                im = _apply_orientation(im)
                return _to_rgb_array(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image too large: pixel count over the decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised file format)") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except MemoryError:
        raise ImageError("not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated", "broken
        # data stream"), and some plugins as SyntaxError/ValueError/EOFError.
        raise ImageError(f"corrupt or truncated image ({first_line(exc)})") from None


def _check_file(path: Path, max_bytes: int) -> None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot access file ({exc.strerror or first_line(exc)})") from None
    if path.is_dir():
        raise ImageError("is a directory, not an image file")
    if not path.is_file():
        raise ImageError("not a regular file")
    check_size(stat.st_size, max_bytes)
    if not os.access(path, os.R_OK):
        raise ImageError("permission denied")


def _apply_orientation(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block should not make a good image unreadable
        return im


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        im = _sixteen_bit_to_l(im)
    elif mode == "F":
        im = _float_to_l(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError):
            raise ImageError(f"unsupported colour mode {mode}") from None
    array = np.array(im, dtype=np.uint8)  # a writable copy
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"unsupported image layout {array.shape}")
    return array


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255; scale instead.
    values = np.asarray(im).astype(np.float64)
    if im.mode == "I" and values.max(initial=0) <= 255:
        scaled = values  # a 32-bit container holding 8-bit data
    else:
        scaled = values / 257.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _float_to_l(im: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(im, dtype=np.float64))
    if values.max(initial=0) <= 1.0:
        values = values * 255.0  # float images are usually 0..1
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))

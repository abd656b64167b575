"""Face alignment: similarity transform from 5 landmarks onto a template, then warp.

Coordinates are (x, y) with pixel centres at integer positions (OpenCV's convention).
Only similarity transforms (rotation, uniform scale, translation) are used, so a face is
never stretched or mirrored. Output pixels that fall outside the source image are filled
with a constant colour (black by default) rather than smeared edge pixels, so padding is
easy to recognise and identical for every image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Shrinking by more than this with plain bilinear sampling aliases; pre-resize instead.
_MAX_BILINEAR_SHRINK = 1.25


def estimate_similarity(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping src onto dst, as a 2 x 3 matrix.

    No reflection: the rotation part always has determinant +1.
    """
    src = np.asarray(src_points, dtype=np.float64)
    dst = np.asarray(dst_points, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching N x 2 point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_variance = (src_centred**2).sum() / len(src)
    if src_variance <= 1e-12:
        raise ValueError("source points are all identical")
    covariance = dst_centred.T @ src_centred / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0  # flip the weakest axis instead of reflecting
    rotation = u @ np.diag(sign) @ vt
    scale = (singular * sign).sum() / src_variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray,
    size: int,
    fill: int = 0,
) -> np.ndarray:
    """Crop a size x size face whose landmarks land on the template (in output pixels).

    Bilinear sampling; when the face is shrunk a lot the relevant region is first resized
    with Pillow's antialiasing LANCZOS filter so the result does not alias.
    """
    image = _check_rgb(image)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    matrix = estimate_similarity(landmarks, template)
    region, offset = _source_region(matrix, size, image.shape[1], image.shape[0])
    if region is None:
        return np.full((size, size, 3), fill, dtype=np.uint8)
    x0, y0, x1, y1 = region
    source = image[y0:y1, x0:x1]
    points = landmarks - offset

    shrink = 1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if shrink > _MAX_BILINEAR_SHRINK:
        height, width = source.shape[:2]
        new_w, new_h = max(1, round(width / shrink)), max(1, round(height / shrink))
        resized = Image.fromarray(source).resize((new_w, new_h), Image.Resampling.LANCZOS)
        source = np.asarray(resized)
        # Pillow maps pixel centres (i + 0.5) * new / old; keep the landmarks in that frame.
        points = (points + 0.5) * np.array([new_w / width, new_h / height]) - 0.5
    matrix = estimate_similarity(points, template)  # in the cropped (and resized) frame
    return _warp_bilinear(source, matrix, size, fill)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def _source_region(matrix: np.ndarray, size: int, width: int, height: int):
    """Integer source window (x0, y0, x1, y1) that the output square samples from."""
    inverse = _invert(matrix)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], float)
    source = corners @ inverse[:, :2].T + inverse[:, 2]
    margin = 2.0 + 4.0 * np.sqrt(abs(np.linalg.det(inverse[:, :2])))  # room for the filter
    x0 = max(int(np.floor(source[:, 0].min() - margin)), 0)
    y0 = max(int(np.floor(source[:, 1].min() - margin)), 0)
    x1 = min(int(np.ceil(source[:, 0].max() + margin)) + 1, width)
    y1 = min(int(np.ceil(source[:, 1].max() + margin)) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None, None
    return (x0, y0, x1, y1), np.array([x0, y0], dtype=np.float64)


def _invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _warp_bilinear(source: np.ndarray, matrix: np.ndarray, size: int, fill: int) -> np.ndarray:
    """Sample output pixel (u, v) from source at inverse(matrix) @ (u, v, 1)."""
    height, width = source.shape[:2]
    inverse = _invert(matrix)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    xs = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    ys = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    # A one-pixel frame of `fill` makes samples beyond the edge blend into the fill colour.
    padded = np.full((height + 2, width + 2, 3), fill, dtype=np.float32)
    padded[1:-1, 1:-1] = source
    xs, ys = xs + 1.0, ys + 1.0
    left = np.clip(np.floor(xs), 0, width).astype(np.int64)
    top = np.clip(np.floor(ys), 0, height).astype(np.int64)
    fx = np.clip(xs - left, 0.0, 1.0)[..., None]
    fy = np.clip(ys - top, 0.0, 1.0)[..., None]
    top_row = padded[top, left] * (1 - fx) + padded[top, left + 1] * fx
    bottom_row = padded[top + 1, left] * (1 - fx) + padded[top + 1, left + 1] * fx
    out = top_row * (1 - fy) + bottom_row * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

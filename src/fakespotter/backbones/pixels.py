"""The start of a backbone's ``preprocess``: checked uint8 RGB crops as a float32 NCHW tensor."""

from __future__ import annotations

import numpy as np
import torch


def planar_float(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB N x size x size x 3 -> float32 N x 3 x size x size, values unchanged."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(
            f"expected uint8 N x {size} x {size} x 3, got {images.dtype} {images.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(torch.float32)

"""A scan worker's state: the model loaded once, with its face cropper and options."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from fakespotter.collection.table import scan_batch


class Scanner:
    """Loads a model file (default: the shipped one) once; calling it on a batch of paths
    gives their rows (:func:`fakespotter.collection.table.scan_batch`).

    ``threads``: torch threads for this process; a worker should use the CPUs it was given
    (one process with 2 threads ran about 4x slower than with 1 when other work shared the
    cores: issue #14)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        aligned: bool = False,
        threshold: float | None = None,
        batch_size: int = 32,
        max_pixels: int | None = None,
        max_bytes: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        import torch

        from fakespotter.modelfile import model_id
        from fakespotter.operating_point import OperatingPoint
        from fakespotter.persistence import default_model_path, load_model

        if threads:
            torch.set_num_threads(threads)
        path = Path(model) if model is not None else default_model_path()
        detector = load_model(path, device=device)
        detector.progress = False
        if threshold is not None:  # the user's cut-off replaces the model's operating point
            detector.set_operating_point(OperatingPoint.cutoff(threshold))
        self.detector = detector
        self.cropper = detector.face_cropper(aligned)
        self.model = model_id(path)
        self.batch_size = batch_size
        self.limits = {k: v for k, v in (("max_pixels", max_pixels), ("max_bytes", max_bytes)) if v}

    def __call__(self, keys: Sequence[str]) -> pa.Table:
        return scan_batch(self, keys)

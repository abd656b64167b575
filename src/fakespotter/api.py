"""One call per task, for Python users: load a model, detect faces, get plain rows.

    import fakespotter
    m = fakespotter.load()                   # the shipped model (or fakespotter.load("m.safetensors"))
    rows = m.detect("photo.jpg")             # a path, an H x W x 3 uint8 RGB array, or file bytes
    for row in m.detect_many(["a.jpg", "b.png"]):
        print(row["path"], row["face"], row["p_fake"], row["label"])
    m = fakespotter.train(real="real/", fake="fake/", output="mine.safetensors")

Rows are the dicts `fakespotter detect --format json` prints (``rows.Row``): faces numbered
left to right from 0, the model's labels, warnings, boxes; a file without a face (or that
cannot be read) gives one row with ``error`` set, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fakespotter.faces.io import MAX_BYTES, MAX_PIXELS

if TYPE_CHECKING:
    from fakespotter.detector import FakeSpotter
    from fakespotter.training import TrainingRecord

ARRAY_NAME = "<array>"  # the ``path`` of a row of an image given as an array
BYTES_NAME = "<bytes>"  # ... as encoded file bytes


class Model:
    """A loaded model with the face finding that goes with it (see :func:`load`)."""

    def __init__(self, detector: FakeSpotter, path: str, *, aligned: bool = False) -> None:
        from fakespotter.modelfile import model_id

        self.detector = detector
        self.path = path
        self.id = model_id(path)
        self.aligned = aligned
        # what the training did, for a model fakespotter.train just made
        self.record: TrainingRecord | None = None
        self._cropper = detector.face_cropper(aligned)

    def __repr__(self) -> str:
        return f"fakespotter.Model({self.path!r}, aligned={self.aligned})"

    def detect(
        self,
        image: str | os.PathLike | np.ndarray | bytes,
        *,
        max_pixels: int = MAX_PIXELS,
        max_bytes: int = MAX_BYTES,
    ) -> list[dict]:
        """The rows of one image: a file path, an RGB (or grey) uint8 array, or the bytes of
        an image file."""
        from fakespotter.faces.io import load_image_bytes
        from fakespotter.photos import read_faces, score_rows

        if isinstance(image, np.ndarray):
            array = _rgb(image)
            found = read_faces(
                self._cropper, ARRAY_NAME, load=lambda *_, **__: _within(array, max_pixels)
            )
        elif isinstance(image, (bytes, bytearray)):
            data = bytes(image)
            found = read_faces(
                self._cropper,
                BYTES_NAME,
                load=lambda *_, **kw: load_image_bytes(data, **kw),
                max_pixels=max_pixels,
                max_bytes=max_bytes,
            )
        else:
            found = read_faces(
                self._cropper, Path(image), max_pixels=max_pixels, max_bytes=max_bytes
            )
        return [r.as_dict() for r in score_rows(self.detector, [found], model=self.id)]

    def detect_many(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        workers: int = 0,
        progress: bool = False,
        batch_size: int = 32,
        max_pixels: int = MAX_PIXELS,
        max_bytes: int = MAX_BYTES,
    ) -> Iterator[dict]:
        """The rows of many files (folders are not walked: pass files), in order, faces
        scored in batches across files; ``workers`` face-finding processes."""
        from fakespotter.photos import find_faces, score_rows

        files = [Path(p) for p in paths]
        found = find_faces(
            self._cropper,
            files,
            progress=progress,
            total=len(files),
            desc="detect",
            workers=workers,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
        )
        for row in score_rows(self.detector, found, batch_size=batch_size, model=self.id):
            yield row.as_dict()


def _rgb(array: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 RGB array from a uint8 grey, RGB or RGBA one; ValueError else."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array (0-255), got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"expected an H x W (grey) or H x W x 3 (RGB) array, got {array.shape}")


def _within(array: np.ndarray, max_pixels: int) -> np.ndarray:
    from fakespotter.faces.io import ImageError

    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageError(
            f"image too large: {array.shape[1]}x{array.shape[0]} pixels (limit {max_pixels:,})"
        )
    return array


def load(
    path: str | os.PathLike | None = None, *, aligned: bool = False, device: str = "cpu"
) -> Model:
    """The shipped model, or the model file at ``path``; ``aligned``: the images given to it
    are already aligned face crops (FFHQ-style), as `detect --aligned`."""
    from fakespotter.persistence import default_model_path, load_model

    where = os.fspath(path) if path is not None else os.fspath(default_model_path())
    return Model(load_model(where, device=device), where, aligned=aligned)


def train(real, fake, output: str | os.PathLike, *, overwrite: bool = False, **options) -> Model:
    """Train a model on folders of real and fake face photos and write it to ``output`` (a
    ``.safetensors`` file), as `fakespotter train`: the trained model, ready to ``detect``;
    its ``record`` says what the training did (``training.TrainingRecord``).

    ``real``, ``fake``: a folder, a list of folders or {name: folder}; ``options``: those of
    :func:`fakespotter.training.train` (``backbone``, ``variant``, ``aligned``, ``val_real``,
    ``val_fake``, ``augment``, ...). An existing ``output`` is replaced only with
    ``overwrite``, and only when it is a fakespotter model (`fakespotter train`'s rule).
    """
    from fakespotter.modelfile import is_model_file
    from fakespotter.persistence import save_model
    from fakespotter.results import check_output
    from fakespotter.training import train as train_model

    where = Path(output)
    check_output(where, "output", overwrite, is_model_file, flag="overwrite=True")
    detector, record = train_model(real, fake, **options)
    save_model(detector, where, record.info)
    model = Model(detector, os.fspath(where), aligned=bool(options.get("aligned")))
    model.record = record
    return model

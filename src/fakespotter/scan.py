"""Photos in, rows out: walk paths, load each image, crop its faces, score them in batches.

Every input file gives at least one row: one per face found, or one row whose ``error`` says
why there is no score (unreadable file, no face found). Nothing is silently dropped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from fakespotter.faces import ImageError, load_image
from fakespotter.faces.pipeline import FaceCrop, FaceCropper

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
NO_FACE = "no face found"


@dataclass
class Row:
    path: str
    face: int | None = None
    box: list[float] | None = None
    p_fake: float | None = None
    label: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def iter_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named directly, and image files under folders (recursively, sorted)."""
    for path in map(Path, paths):
        if path.is_dir():
            for root, dirs, files in os.walk(path, onerror=None):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield Path(root) / name
        else:
            yield path  # missing or odd paths are reported by the loader, not skipped


@dataclass
class Faces:
    """One input file with its aligned faces, or the reason it has none."""

    path: Path
    faces: list[FaceCrop]
    error: str | None = None


def find_faces(cropper: FaceCropper, files: Iterable[Path], *, progress: bool = False,
               total: int | None = None, desc: str = "faces") -> Iterator[Faces]:
    for path in tqdm(files, total=total, desc=desc, unit="img", disable=not progress,
                     file=sys.stderr, leave=False):
        try:
            image = load_image(path)
        except ImageError as e:
            yield Faces(path, [], str(e))
            continue
        faces = cropper(image)
        yield Faces(path, faces, None if faces else NO_FACE)


def score_rows(detector, found: Iterable[Faces], *, batch_size: int = 32) -> Iterator[Row]:
    """Rows for each file in order; faces are scored in batches across files."""
    pending: list[Faces] = []
    n_faces = 0

    def flush() -> Iterator[Row]:
        crops = [face.crop for item in pending for face in item.faces]
        p_fake = detector.predict_proba(np.stack(crops))[:, 1] if crops else np.zeros(0)
        k = 0
        for item in pending:
            if item.error:
                yield Row(path=str(item.path), error=item.error)
            for i, face in enumerate(item.faces):
                p = float(p_fake[k])
                k += 1
                yield Row(path=str(item.path), face=i, box=[round(v, 1) for v in face.box],
                          p_fake=p, label="fake" if p >= 0.5 else "real")
        pending.clear()

    for item in found:
        pending.append(item)
        n_faces += len(item.faces)
        if n_faces >= batch_size:
            yield from flush()
            n_faces = 0
    yield from flush()

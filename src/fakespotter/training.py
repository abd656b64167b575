"""The rules of training and evaluation, in one place for the CLI and the benchmarks.

* An image counts by its **largest face** (the one a photo is about; MTCNN lists it first).
* An image where **no face is found counts as predicted real** (p_fake 0) when measuring: a
  detector that misses a face is no help against that fake.
* **Augmented training**: one randomly perturbed copy of every photo joins the training set
  (thresholds stay those of the photos themselves), and a copy stays in its photo's
  cross-validation fold, so C and the calibration are chosen on photos never seen in any form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from fakespotter.faces.io import MAX_BYTES, MAX_PIXELS
from fakespotter.rows import NO_FACE

NO_FACE_SCORE = 0.0  # p_fake of an image whose face was not found: predicted real


@dataclass
class LargestFaces:
    """The largest face of each image of a set, and the images that gave none."""

    crops: np.ndarray  # N x S x S x 3 uint8
    paths: list = field(default_factory=list)  # the images of the crops, in order
    no_face: list = field(default_factory=list)  # images where no face was found
    unreadable: list = field(default_factory=list)  # (image, reason) for the rest


def largest_faces(
    cropper,
    files: Sequence[Path],
    *,
    progress: bool = False,
    desc: str = "faces",
    workers: int = 0,
    augment_seed: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> LargestFaces:
    """The largest face of every file, cropped by ``cropper`` (``scan.find_faces`` does the
    reading, in worker processes when ``workers > 0``). ``augment_seed``: crop the
    training-time augmentation of each image instead (``perturb.random_perturbation``)."""
    from fakespotter.evaluation.perturb import RandomAugmentation
    from fakespotter.scan import find_faces

    alter_of = None if augment_seed is None else partial(RandomAugmentation, augment_seed)
    crops, out = [], LargestFaces(np.zeros((0, cropper.size, cropper.size, 3), np.uint8))
    for item in find_faces(
        cropper,
        files,
        progress=progress,
        total=len(files),
        desc=desc,
        workers=workers,
        alter_of=alter_of,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
    ):
        if item.faces:
            crops.append(item.faces[0].crop)  # the cropper lists the largest face first
            out.paths.append(item.path)
        elif item.error == NO_FACE:
            out.no_face.append(item.path)
        else:
            out.unreadable.append((item.path, item.error))
    if crops:
        out.crops = np.stack(crops)
    return out


def copies_of(photos: Sequence, copies: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Which copies have their photo among ``photos`` (a bool mask over ``copies``), and the
    index of that photo for each kept copy."""
    index = {p: i for i, p in enumerate(photos)}
    keep = np.array([c in index for c in copies], dtype=bool)
    return keep, np.array([index[c] for c in copies if c in index], dtype=int)


def fit_with_copies(
    detector,
    features: np.ndarray,
    y,
    copy_features: np.ndarray | None = None,
    copy_y=None,
    copy_of: Iterable[int] | None = None,
):
    """``detector.fit_features`` on photos plus their perturbed copies (thresholds already
    fit on the photos): copy k shares the cross-validation fold of photo ``copy_of[k]``."""
    y = np.asarray(y)
    if copy_features is None or len(copy_features) == 0:
        return detector.fit_features(features, y)
    if copy_of is None:
        raise ValueError("copy_of is required with copy_features")
    groups = np.r_[np.arange(len(y)), np.asarray(list(copy_of), dtype=int)]
    return detector.fit_features(
        np.concatenate([features, copy_features]), np.r_[y, np.asarray(copy_y)], groups=groups
    )


def scores_with_missing(p_fake_found: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per-image p_fake from the scores of the images with a face (``found`` a bool mask):
    the others count as predicted real."""
    found = np.asarray(found, dtype=bool)
    p = np.full(len(found), NO_FACE_SCORE)
    p[found] = p_fake_found
    return p


def score_labelled(detector, sets: Sequence[tuple[LargestFaces, int]]) -> dict:
    """Score labelled sets of largest faces by the evaluation rules.

    ``sets``: (faces, label) pairs. Returns the ``paths``, ``labels`` and ``p_fake`` of every
    image, the images with a face first (set by set) and then those without one (scored as
    predicted real), and the ``features`` of the crops, whose rows are the first images.
    """
    paths = [p for s, _ in sets for p in s.paths]
    labels = [label for s, label in sets for _ in s.paths]
    crops = [s.crops for s, _ in sets if len(s.crops)]
    features, p_found = None, np.zeros(0)
    if crops:
        features = detector.transform(np.concatenate(crops))
        p_found = detector.predict_proba(features=features)[:, 1]
    missing = [(p, label) for s, label in sets for p in s.no_face]
    return {
        "paths": paths + [p for p, _ in missing],
        "labels": labels + [lab for _, lab in missing],
        "p_fake": np.r_[p_found, np.full(len(missing), NO_FACE_SCORE)],
        "features": features,
    }

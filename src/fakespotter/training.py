"""The rules of training and evaluation, in one place for the CLI and the benchmarks.

* An image counts by its **largest face** (the one a photo is about: ``largest_face``).
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
from fakespotter.operating_point import OperatingPoint
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
    augmentation: str = "simple",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> LargestFaces:
    """The largest face of every file, cropped by ``cropper`` (``photos.find_faces`` does the
    reading, in worker processes when ``workers > 0``). ``augment_seed``: crop an altered copy
    of each image instead, by the ``augmentation`` recipe (``perturb.AUGMENTATIONS``)."""
    from fakespotter.evaluation.perturb import AUGMENTATIONS
    from fakespotter.faces.pipeline import largest_face
    from fakespotter.photos import find_faces

    recipe = AUGMENTATIONS[augmentation]
    alter_of = None if augment_seed is None else partial(recipe, augment_seed)
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
            crops.append(largest_face(item.faces).crop)
            out.paths.append(item.path)
        elif item.error == NO_FACE:
            out.no_face.append(item.path)
        else:
            out.unreadable.append((item.path, item.error))
    if crops:
        out.crops = np.stack(crops)
    return out


def merge_faces(parts: Sequence[LargestFaces]) -> LargestFaces:
    """Several sets of largest faces (e.g. one per fake source) as one, in order."""
    if len(parts) == 1:
        return parts[0]
    out = LargestFaces(np.concatenate([p.crops for p in parts]))
    for p in parts:
        out.paths += p.paths
        out.no_face += p.no_face
        out.unreadable += p.unreadable
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


# The operating point's defaults (docs/shipped_model.md, "Reading the labels").
MAX_FALSE_ALARM = 0.01  # at most this share of held-out real photos is labelled fake
MAX_MISSED = 0.05  # at most this share of held-out fakes is labelled real; between: uncertain
# a face farther than this percentile of held-out *real* faces is flagged: the warning's
# false-alarm rate on photos like the training ones (reals spread wider than the fakes of the
# training generators: a limit from both classes flagged 2.4% of test reals, this one 1.5%)
NOVELTY_PERCENTILE = 99.0


def choose_operating_point(
    p_fake, labels, *, max_false_alarm: float = MAX_FALSE_ALARM, max_missed: float = MAX_MISSED
) -> dict:
    """The threshold and uncertain band, chosen on held-out photos (never the test split).

    * ``threshold``: the lowest P(fake) at which at most ``max_false_alarm`` of the real
      photos would be labelled fake;
    * ``uncertain``: [low, threshold), with ``low`` the highest P(fake) below which at most
      ``max_missed`` of the fakes fall (labelled real); None when that is not below the
      threshold. Photos scoring in the band are labelled "uncertain".

    Returns the two and the rates they give on these photos.
    """
    p, y = np.asarray(p_fake, dtype=np.float64), np.asarray(labels)
    real, fake = np.sort(p[y == 0]), np.sort(p[y == 1])
    if not len(real) or not len(fake):
        raise ValueError("choosing an operating point needs real and fake photos")
    # at most floor(a * n) reals may reach the threshold: just above the next one down
    allowed = int(np.floor(max_false_alarm * len(real)))
    threshold = (
        float(np.nextafter(real[len(real) - allowed - 1], np.inf)) if allowed < len(real) else 0.0
    )
    threshold = min(max(threshold, 0.0), 1.0)
    missed = int(np.floor(max_missed * len(fake)))  # this many fakes may fall below `low`
    low = float(fake[missed]) if missed < len(fake) else threshold
    band = [low, threshold] if low < threshold else None
    lab = np.array(OperatingPoint(threshold, None if band is None else low).labels(p))
    rates = {
        f"{name}_{what}": float(np.mean(lab[y == cls] == what))
        for cls, name in ((0, "real"), (1, "fake"))
        for what in ("fake", "uncertain", "real")
    }
    return {
        "threshold": threshold,
        "uncertain": band,
        "max_false_alarm": max_false_alarm,
        "max_missed": max_missed,
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
        **rates,
    }


def novelty_threshold(novelty, percentile: float = NOVELTY_PERCENTILE) -> float:
    """The novelty above which a face is flagged: a high percentile of held-out real faces'."""
    return float(np.percentile(np.asarray(novelty, dtype=np.float64), percentile))


def held_out_novelty_threshold(
    detector, features: np.ndarray, y, *, held_out: float = 0.2, seed: int = 0
) -> float:
    """Without held-out photos: fit the novelty signal on most training faces, take the limit
    from the real ones among the rest (training faces score closer than new ones would), then
    refit on all."""
    y = np.asarray(y)
    order = np.random.default_rng(seed).permutation(len(features))
    cut = max(1, int(round(len(features) * (1 - held_out))))
    detector.fit_novelty(features[order[:cut]])
    rest = order[cut:]
    real = rest[y[rest] == 0]
    limit = novelty_threshold(detector.novelty(features[real if len(real) else rest]))
    detector.fit_novelty(features)
    return limit

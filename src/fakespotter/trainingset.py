"""A model's training faces as features, in one file: what ``fakespotter update`` refits on.

``fakespotter train --save-features F`` writes the coverage features of every training face
(and augmented copy) with its label, photo group and source; ``fakespotter update --features
F --fake NAME=DIR`` counts only the new faces, with the model's own thresholds, and refits the
classifier on old and new together: seconds instead of the minutes of a full retrain
(``benchmarks/learning_curve.py`` measures both). The counts are only comparable while the
thresholds are the same, so the file carries a fingerprint of the model's fitted criterion and
refuses another model's.

A ``.npz`` of plain arrays plus one JSON string, read with ``allow_pickle=False``: data, never
code, like the model files.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from fakespotter.errors import UserError

FORMAT = "fakespotter-training-features/1"
_ARRAYS = ("features", "y", "groups", "source")


class TrainingFeaturesError(UserError):
    """A features file that cannot be read, or that belongs to another model."""


def fingerprint(detector) -> str:
    """What the counts depend on: backbone and its weights, criterion, neurons, taps and the
    fitted thresholds (sha256)."""
    bb = detector.network()
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [bb.name, bb.weights_sha256, detector.variant, detector.neuron, list(detector.taps_)]
        ).encode()
    )
    digest.update(np.ascontiguousarray(detector.thresholds_, np.float64).tobytes())
    return digest.hexdigest()


@dataclass
class TrainingFeatures:
    """Rows of training features: ``groups`` ties a photo's augmented copies to it (same
    cross-validation fold); ``source`` indexes ``sources`` (``"real"`` or a fake source)."""

    features: np.ndarray  # N x F float32
    y: np.ndarray  # N, 0 real / 1 fake
    groups: np.ndarray  # N, photo id
    source: np.ndarray  # N, index into sources
    sources: list[str]

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features.ndim != 2 or any(len(a) != n for a in (self.y, self.groups, self.source)):
            raise TrainingFeaturesError("training features: arrays of different lengths")

    def __len__(self) -> int:
        return len(self.features)

    def extended(self, other: TrainingFeatures) -> TrainingFeatures:
        """These rows and then ``other``'s; its photos get group ids of their own, its
        sources are merged by name."""
        if other.features.shape[1] != self.features.shape[1]:
            raise TrainingFeaturesError(
                f"new faces have {other.features.shape[1]} features, the stored ones "
                f"{self.features.shape[1]}"
            )
        names = list(self.sources)
        for name in other.sources:
            if name not in names:
                names.append(name)
            elif (
                self._labels_of(name)
                and other._labels_of(name)
                and (self._labels_of(name) != other._labels_of(name))
            ):  # one name, two classes: the rows would merge into one source
                raise TrainingFeaturesError(
                    f"source {name!r} holds {_class_of(self._labels_of(name))} photos in the "
                    f"stored features and {_class_of(other._labels_of(name))} ones in the new"
                )
        remap = np.array([names.index(s) for s in other.sources], dtype=np.int64)
        offset = int(self.groups.max()) + 1 if len(self.groups) else 0
        return TrainingFeatures(
            np.concatenate([self.features, other.features]),
            np.r_[self.y, other.y],
            np.r_[self.groups, np.asarray(other.groups) + offset],
            np.r_[self.source, remap[np.asarray(other.source, dtype=np.int64)]]
            if len(other)
            else self.source,
            names,
        )

    def _labels_of(self, name: str) -> set[int]:
        return set(self.y[self.source == self.sources.index(name)].tolist())

    def counts(self) -> dict[str, int]:
        """Rows per source."""
        return {name: int((self.source == i).sum()) for i, name in enumerate(self.sources)}


def _class_of(labels: set[int]) -> str:
    return " and ".join(("real", "fake")[v] for v in sorted(labels))


def _storage(features: np.ndarray) -> np.ndarray:
    """Counts as uint16 where they fit exactly (a quarter of float64, half of float32)."""
    f = np.asarray(features)
    if f.size and np.all(f >= 0) and f.max() < 2**16 and np.all(f == np.round(f)):
        return f.astype(np.uint16)
    return f.astype(np.float32)


def save_training_features(path, detector, rows: TrainingFeatures) -> None:
    """Write ``rows`` (counted by ``detector``'s fitted thresholds) to ``path`` atomically."""
    from fakespotter.version import __version__

    meta = {
        "format": FORMAT,
        "package_version": __version__,
        "fingerprint": fingerprint(detector),
        "backbone": detector.network().name,
        "variant": detector.variant,
        "sources": list(rows.sources),
    }
    path = os.fspath(path)
    partial = path + ".partial"
    with open(partial, "wb") as f:
        np.savez_compressed(
            f,
            meta=np.array(json.dumps(meta)),
            features=_storage(rows.features),
            y=np.asarray(rows.y, np.int8),
            groups=np.asarray(rows.groups, np.int64),
            source=np.asarray(rows.source, np.int16),
        )
    os.replace(partial, path)


def is_training_features(path) -> bool:
    """Whether ``path`` is a training-features file (of any model): what --save-features
    may replace."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"])) if "meta" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def load_training_features(path, detector) -> TrainingFeatures:
    """Read a features file, checking it belongs to ``detector`` (same fingerprint)."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            missing = [k for k in ("meta", *_ARRAYS) if k not in data.files]
            if missing:
                raise TrainingFeaturesError(
                    f"{path} is not a fakespotter training-features file (no {missing[0]})"
                )
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in _ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, TrainingFeaturesError):
            raise
        raise TrainingFeaturesError(
            f"{path} is not a fakespotter training-features file ({e})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainingFeaturesError(f"{path} is not a fakespotter training-features file")
    sources = meta.get("sources")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise TrainingFeaturesError(f"{path}: its list of sources is damaged")
    if meta.get("fingerprint") != fingerprint(detector):
        raise TrainingFeaturesError(
            f"{path} holds the features of another model (counted with other thresholds); "
            "use the features file written with this model"
        )
    features = arrays["features"]
    if features.ndim != 2 or features.shape[1] != detector.n_features_in_:
        raise TrainingFeaturesError(
            f"{path} has {features.shape[-1]} features per face, the model "
            f"{detector.n_features_in_}"
        )
    source = arrays["source"].astype(np.int64)
    if len(source) and (source.min() < 0 or source.max() >= len(sources)):
        raise TrainingFeaturesError(f"{path}: a row names a source it does not list")
    y = arrays["y"].astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise TrainingFeaturesError(f"{path}: labels must be 0 (real) or 1 (fake)")
    return TrainingFeatures(
        features.astype(np.float32), y, arrays["groups"].astype(np.int64), source, sources
    )

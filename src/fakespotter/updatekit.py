"""The update kit: what `fakespotter update` refits a model on when it has no features file.

``fakespotter update`` refits the classifier on the model's training faces plus the new ones
(``trainingset``). The full training features of the shipped model are far too large to
ship (about 14,000 rows of 44,288 counts), so the package carries a *kit* beside the model: a
class-balanced subsample of the training rows (faces nearest the SVM's boundary first, every
source represented), stored as 8-bit codes of the model's features (optionally of the most
weighted columns only), with a weight per row so that every old source keeps the weight it had
in the full training set. ``benchmarks/teach.py`` measures the designs against a refit on all
training rows (docs/teaching.md).

``update_with_kit`` is the refit: scaler, linear SVM (at the model's C, not searched again),
Platt calibration, then the classifier expressed in the model's own scaler so that the
model's novelty signal stays valid and is kept (the kit holds too few real faces to refit it:
docs/teaching.md); and the operating point, chosen on the out-of-fold scores of the stored and
new faces so that at most 1% of *each* real source's photos are called fake.
``fit_real_novelty`` fits a model's novelty signal on real faces only (a reference of diverse
real photos), for the shipped model at training time.

File format: one safetensors file (JSON metadata in its header, no pickle), validated before
any tensor is read, like a model file; it names the model's fingerprint (``trainingset
.fingerprint``: backbone weights, criterion, taps and fitted thresholds, i.e. what the counts
depend on) and is refused in one line by a model with another one.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakespotter.errors import UserError
from fakespotter.trainingset import TrainingFeatures, fingerprint

FORMAT = "fakespotter-update-kit/1"
KIT_SUFFIX = ".kit.safetensors"  # the kit of model M.safetensors is M.kit.safetensors beside it
MAX_KIT_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_FALSE_ALARM = 0.01  # of each real source's photos (out-of-fold) called fake
MAX_MISSED = 0.05  # of the fakes below the uncertain band
NOVELTY_PERCENTILE = 99.0
NOVELTY_HELD_OUT = 0.2

_DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "F32": np.float32}
# name -> (dtype, shape as metadata keys: "n" rows, "k" kept columns)
_ARRAYS = {
    "codes": ("U8", ("n", "k")),
    "columns": ("I32", ("k",)),
    "low": ("F32", ("k",)),
    "step": ("F32", ("k",)),
    "y": ("I8", ("n",)),
    "groups": ("I32", ("n",)),
    "source": ("I16", ("n",)),
    "weight": ("F32", ("n",)),
}
_VAL_ARRAYS = {"val_codes": ("U8", ("m", "k")), "val_y": ("I8", ("m",))}


class KitError(UserError):
    """An update kit that cannot be read, or that belongs to another model (one line)."""


@dataclass
class UpdateKit:
    """Stored training rows of one model, 8-bit coded: row i's value of model feature
    ``columns[j]`` is ``low[j] + step[j] * codes[i, j]``; the model's other columns are not
    stored (an update fits on the stored columns only)."""

    codes: np.ndarray  # N x K uint8
    columns: np.ndarray  # K, sorted indices into the model's features
    low: np.ndarray  # K float32
    step: np.ndarray  # K float32
    y: np.ndarray  # N, 0 real / 1 fake
    groups: np.ndarray  # N, photo id: a photo and its augmented copies share one
    source: np.ndarray  # N, index into sources
    weight: np.ndarray  # N, each row's weight in the SVM (old sources keep their weight)
    sources: list[str]
    fingerprint: str  # the model's (trainingset.fingerprint)
    n_features: int  # the model's full width
    info: dict = field(default_factory=dict)  # how it was built: design, counts, model id
    # held-out photos (the model's val photos), coded alike: the update chooses its operating
    # point on them as `train --val-real --val-fake` did; None in a kit without them
    val_codes: np.ndarray | None = None  # M x K uint8
    val_y: np.ndarray | None = None  # M, 0 real / 1 fake

    def __len__(self) -> int:
        return len(self.codes)

    def features(self) -> np.ndarray:
        """N x K float32 values of the stored columns."""
        return self.low + self.step * self.codes.astype(np.float32)

    def val_features(self) -> np.ndarray | None:
        """M x K float32 values of the held-out photos' stored columns, if the kit has them."""
        if self.val_codes is None:
            return None
        return self.low + self.step * self.val_codes.astype(np.float32)

    def rows(self) -> TrainingFeatures:
        """The stored rows (stored columns only), as ``trainingset.TrainingFeatures``."""
        return TrainingFeatures(
            self.features(),
            self.y.astype(np.int64),
            self.groups.astype(np.int64),
            self.source.astype(np.int64),
            list(self.sources),
        )

    def nbytes(self) -> int:
        names = [*_ARRAYS, *(_VAL_ARRAYS if self.val_codes is not None else ())]
        return sum(np.asarray(getattr(self, name)).nbytes for name in names)


# -- building --------------------------------------------------------------------------------


def quantize(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit codes of each column between its minimum and maximum: (codes, low, step); the
    error of a value is at most step / 2."""
    f = np.asarray(features, dtype=np.float32)
    low = f.min(axis=0) if len(f) else np.zeros(f.shape[1], np.float32)
    high = f.max(axis=0) if len(f) else low
    step = ((high - low) / 255.0).astype(np.float32)
    safe = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint((f - low) / safe), 0, 255).astype(np.uint8)
    return codes, low.astype(np.float32), step


def quantize_with_held_out(
    stored: np.ndarray, held: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """:func:`quantize` of the stored rows and the held-out photos' rows on one scale (a
    kit has one offset and step per column): (codes, held-out codes or None, low, step)."""
    codes, low, step = quantize(stored if held is None else np.concatenate([stored, held]))
    if held is None:
        return codes, None, low, step
    return codes[: len(stored)], codes[len(stored) :], low, step


def choose_rows(
    rows: TrainingFeatures,
    per_class: int,
    *,
    margin: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices of a class-balanced subsample of ``rows``, whole photo groups at a time (a
    photo with its augmented copies): ``per_class`` rows of each class at most, each source
    of a class in proportion to its rows (at least a few photos each). With ``margin`` (each
    row's y * decision of the model, smaller = nearer the boundary or wrong), the groups
    nearest the boundary come first within a source (the support vectors that hold the
    boundary); without, a random draw."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(rows.groups)
    keep: list[np.ndarray] = []
    for label in (0, 1):
        in_class = np.asarray(rows.y) == label
        sources = np.unique(np.asarray(rows.source)[in_class])
        total = int(in_class.sum())
        for s in sources:
            mine = np.flatnonzero(in_class & (np.asarray(rows.source) == s))
            quota = max(min(len(mine), 8), int(round(per_class * len(mine) / max(total, 1))))
            group_ids = np.unique(groups[mine])
            if margin is None:
                order = rng.permutation(len(group_ids))
            else:  # a group is as near as its nearest row
                nearest = np.full(len(group_ids), np.inf)
                pos = np.searchsorted(group_ids, groups[mine])
                np.minimum.at(nearest, pos, np.asarray(margin)[mine])
                order = np.lexsort((rng.random(len(group_ids)), nearest))
            by_group = mine[np.argsort(groups[mine], kind="stable")]
            members = np.split(by_group, np.searchsorted(groups[by_group], group_ids[1:]))
            taken, n = [], 0
            for g in order:
                if n >= quota:
                    break
                taken.append(members[g])
                n += len(members[g])
            if taken:
                keep.append(np.concatenate(taken))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def build_kit(
    detector,
    rows: TrainingFeatures,
    *,
    per_class: int = 600,
    columns: np.ndarray | None = None,
    margin: np.ndarray | None = None,
    row_sources: list[str] | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    info: dict | None = None,
) -> UpdateKit:
    """The kit of ``detector`` from its training features ``rows`` (``fakespotter train
    --save-features``): ``choose_rows`` picks the rows, ``columns`` the model features kept
    (default all), each row weighs (its source's rows in ``rows``) / (its source's rows in
    the kit). ``row_sources``: a source name per row instead of ``rows.sources`` (e.g.
    ``real:ffhq``, ``real:utk`` for reals of several sources, so that each keeps its weight
    and its own false-alarm limit). ``val``: (features, labels) of held-out photos (those
    the model's operating point was chosen on), stored so that an update chooses its own on
    them the same way."""
    if row_sources is not None:
        if len(row_sources) != len(rows):
            raise ValueError("row_sources needs one name per row")
        names = sorted(set(row_sources), key=row_sources.index)
        rows = TrainingFeatures(
            rows.features,
            rows.y,
            rows.groups,
            np.array([names.index(s) for s in row_sources], dtype=np.int64),
            names,
        )
    n_features = int(rows.features.shape[1])
    if n_features != int(detector.n_features_in_):
        raise ValueError(f"rows have {n_features} features, the model {detector.n_features_in_}")
    cols = (
        np.arange(n_features) if columns is None else np.unique(np.asarray(columns, dtype=np.int64))
    )
    if not len(cols) or cols[0] < 0 or cols[-1] >= n_features:
        raise ValueError("columns must be indices of the model's features")
    picked = choose_rows(rows, per_class, margin=margin, seed=seed)
    stored = np.asarray(rows.features)[picked][:, cols]
    held = None if val is None else np.asarray(val[0])[:, cols]
    codes, val_codes, low, step = quantize_with_held_out(stored, held)
    if val is not None and not np.isin(np.asarray(val[1]), (0, 1)).all():
        raise ValueError("val labels must be 0 (real) or 1 (fake)")
    full = np.bincount(np.asarray(rows.source), minlength=len(rows.sources))
    kept = np.bincount(np.asarray(rows.source)[picked], minlength=len(rows.sources))
    source = np.asarray(rows.source)[picked]
    weight = (full[source] / np.maximum(kept[source], 1)).astype(np.float32)
    # group ids from 0, in order: the file stores them as int32
    _, groups = np.unique(np.asarray(rows.groups)[picked], return_inverse=True)
    return UpdateKit(
        codes=codes,
        columns=cols.astype(np.int32),
        low=low,
        step=step,
        y=np.asarray(rows.y)[picked].astype(np.int8),
        groups=groups.astype(np.int32),
        source=source.astype(np.int16),
        weight=weight,
        sources=list(rows.sources),
        fingerprint=fingerprint(detector),
        n_features=n_features,
        info={
            "per_class": int(per_class),
            "rows_by_source_full": {s: int(n) for s, n in zip(rows.sources, full, strict=True)},
            "rows_by_source_kit": {s: int(n) for s, n in zip(rows.sources, kept, strict=True)},
            "picked": "nearest the boundary first" if margin is not None else "random",
            **(info or {}),
        },
        val_codes=val_codes,
        val_y=None if val is None else np.asarray(val[1]).astype(np.int8),
    )


# -- the file --------------------------------------------------------------------------------


def save_kit(path, kit: UpdateKit) -> None:
    """Write ``kit`` to one safetensors file, atomically (data only: arrays + JSON)."""
    from safetensors.numpy import save_file

    from fakespotter.version import __version__

    meta = {
        "format": FORMAT,
        "package_version": __version__,
        "fingerprint": kit.fingerprint,
        "n_features": int(kit.n_features),
        "n_rows": len(kit),
        "n_columns": int(len(kit.columns)),
        "n_val": 0 if kit.val_codes is None else len(kit.val_codes),
        "sources": list(kit.sources),
        "info": kit.info,
    }
    layout = {**_ARRAYS, **(_VAL_ARRAYS if kit.val_codes is not None else {})}
    arrays = {
        name: np.ascontiguousarray(np.asarray(getattr(kit, name)), dtype=_DTYPES[dtype])
        for name, (dtype, _) in layout.items()
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        text = json.dumps(meta, sort_keys=True, allow_nan=False)
        save_file(arrays, str(tmp), metadata={"fakespotter_kit": text})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # shipped beside a model and shared like one
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fail(path, why: str) -> KitError:
    return KitError(f"{path}: {why}")


def _read_header(path, f, size: int) -> tuple[dict, dict, int]:
    if size > MAX_KIT_BYTES:
        raise _fail(path, f"update kit is {size} bytes, more than the {MAX_KIT_BYTES} allowed")
    if size < 8:
        raise _fail(path, "not a fakespotter update kit (too short)")
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > min(MAX_HEADER_BYTES, size - 8):
        raise _fail(path, "not a fakespotter update kit (bad header length)")
    try:
        header = json.loads(f.read(header_len).decode("utf-8"), parse_constant=_no_constant)
        text = header["__metadata__"]["fakespotter_kit"]
        meta = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        raise _fail(path, "not a fakespotter update kit (no kit metadata)") from None
    if not isinstance(header, dict) or not isinstance(meta, dict):
        raise _fail(path, "not a fakespotter update kit (damaged header)")
    return header, meta, 8 + header_len


def _no_constant(name: str):
    raise ValueError(name)


def _int(meta: dict, key: str, top: int) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= top:
        raise ValueError(key)
    return value


def read_kit(path) -> UpdateKit:
    """Read and validate a kit file (sizes, dtypes, shapes, byte ranges and metadata before
    any tensor is read; values after), without checking which model it belongs to."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            header, meta, start = _read_header(path, f, size)
            if meta.get("format") != FORMAT:
                raise _fail(path, "not a fakespotter update kit (unknown format)")
            try:
                dims = {
                    "n": _int(meta, "n_rows", 10_000_000),
                    "k": _int(meta, "n_columns", 10_000_000),
                }
                n_features = _int(meta, "n_features", 10_000_000)
                n_val = meta.get("n_val", 0)
                if n_val != 0:
                    dims["m"] = n_val = _int(meta, "n_val", 10_000_000)
            except ValueError as e:
                raise _fail(path, f"update kit metadata {e} is not valid") from None
            sources, print_ = meta.get("sources"), meta.get("fingerprint")
            if (
                not isinstance(sources, list)
                or not sources
                or not all(isinstance(s, str) for s in sources)
                or not isinstance(print_, str)
                or not isinstance(meta.get("info", {}), dict)
            ):
                raise _fail(path, "update kit metadata is damaged")
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            layout = {**_ARRAYS, **(_VAL_ARRAYS if n_val else {})}
            if set(tensors) != set(layout):
                odd = sorted(set(tensors) ^ set(layout))[0]
                raise _fail(path, f"update kit tensors do not match (tensor {odd!r})")
            arrays: dict[str, Any] = {}
            for name, (dtype, dims_of) in layout.items():
                t = tensors[name]
                shape = [dims[d] for d in dims_of]
                if not isinstance(t, dict) or t.get("dtype") != dtype or t.get("shape") != shape:
                    raise _fail(path, f"update kit tensor {name!r} has the wrong type or shape")
                nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
                offsets = t.get("data_offsets")
                if (
                    not isinstance(offsets, list)
                    or len(offsets) != 2
                    or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                    or offsets[1] - offsets[0] != nbytes
                    or offsets[0] < 0
                    or start + offsets[1] > size
                ):
                    raise _fail(path, f"update kit tensor {name!r} lies outside the file")
                f.seek(start + offsets[0])
                buf = f.read(nbytes)
                if len(buf) != nbytes:
                    raise _fail(path, "update kit is truncated")
                dt = np.dtype(_DTYPES[dtype]).newbyteorder("<")
                arrays[name] = (
                    np.frombuffer(buf, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
                )
    except OSError as e:
        raise KitError(f"cannot read update kit {path}: {e.strerror or e}") from None
    for name in ("low", "step", "weight"):
        if not np.all(np.isfinite(arrays[name])):
            raise _fail(path, f"update kit tensor {name!r} holds NaN or infinite values")
    cols = arrays["columns"]
    if np.any(np.diff(cols) <= 0) or cols[0] < 0 or cols[-1] >= n_features:
        raise _fail(path, "update kit columns are not sorted indices of the model's features")
    if np.any(arrays["step"] < 0) or np.any(arrays["weight"] < 0):
        raise _fail(path, "update kit steps and weights must not be negative")
    if not np.isin(arrays["y"], (0, 1)).all() or len(np.unique(arrays["y"])) != 2:
        raise _fail(path, "update kit labels must be 0 (real) and 1 (fake), both present")
    if arrays["source"].min() < 0 or arrays["source"].max() >= len(sources):
        raise _fail(path, "a row of the update kit names a source it does not list")
    if n_val and (
        not np.isin(arrays["val_y"], (0, 1)).all() or len(np.unique(arrays["val_y"])) != 2
    ):
        raise _fail(path, "update kit held-out labels must be 0 (real) and 1 (fake), both present")
    return UpdateKit(
        **arrays,
        sources=list(sources),
        fingerprint=print_,
        n_features=n_features,
        info=dict(meta.get("info", {})),
    )


def load_kit(path, detector) -> UpdateKit:
    """``read_kit``, refused in one line unless the kit belongs to ``detector`` (same
    fingerprint: the same network, criterion and fitted thresholds, so the counts of new
    faces are comparable with the stored ones)."""
    kit = read_kit(path)
    if kit.fingerprint != fingerprint(detector):
        raise _fail(
            path,
            "this update kit belongs to another model (its counts were made with other "
            "thresholds); use the model it was built for, or give that model's --features",
        )
    if kit.n_features != int(detector.n_features_in_):
        raise _fail(
            path, f"update kit is for {kit.n_features} features, the model has "
            f"{detector.n_features_in_}"
        )  # fmt: skip
    return kit


def kit_file_beside(model_path) -> Path:
    """Where the kit of a model file goes: ``M.safetensors`` -> ``M.kit.safetensors``."""
    p = Path(os.fspath(model_path))
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + KIT_SUFFIX)


def kit_path_for(model_path) -> Path | None:
    """The kit beside a model file, if there is one."""
    kit = kit_file_beside(model_path)
    return kit if kit.is_file() else None


def is_kit_file(path) -> bool:
    """Whether ``path`` begins as an update kit (safetensors with the kit's metadata)."""
    from fakespotter.modelfile import metadata_keys

    return "fakespotter_kit" in metadata_keys(path)


def kit_for_model(model_path, detector) -> UpdateKit:
    """The kit beside ``model_path`` (the shipped model's ships beside it), loaded for
    ``detector``; refused in one line when there is none or it is another model's."""
    path = kit_path_for(model_path)
    if path is None:
        name = Path(os.fspath(model_path)).name
        stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
        raise KitError(
            f"{model_path}: no update kit beside this model ({stem}{KIT_SUFFIX}); give its "
            "training features with --features (fakespotter train --save-features)"
        )
    return load_kit(path, detector)


# -- the update ------------------------------------------------------------------------------


def _oof_decision(Z: np.ndarray, y, groups, weight, C: float, cv: int, seed: int) -> np.ndarray:
    """Out-of-fold SVM decision values at ``C``, folds as ``FakeSpotter.fit_features`` makes
    them (a photo's copies stay in its fold)."""
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.svm import SVC

    Z32 = np.ascontiguousarray(Z, dtype=np.float32)
    K = (Z32 @ Z32.T).astype(np.float64)
    _, first = np.unique(groups, return_index=True)
    n_splits = max(2, min(cv, *np.bincount(y[first], minlength=2)))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = np.zeros(len(y))
    for train, test in folds.split(Z, y, groups):
        svm = SVC(kernel="precomputed", C=C, cache_size=1000)
        svm.fit(K[np.ix_(train, train)], y[train], weight[train])
        scores[test] = svm.decision_function(K[np.ix_(test, train)])
    return scores


def operating_point_per_source(
    p_fake: np.ndarray,
    y: np.ndarray,
    source: np.ndarray,
    sources: list[str],
    *,
    max_false_alarm: float = MAX_FALSE_ALARM,
    max_missed: float = MAX_MISSED,
) -> dict:
    """The lowest threshold at which at most ``max_false_alarm`` of *each* real source's
    photos score as fake (the strictest source decides), and the uncertain band below it
    (``max_missed`` of all fakes under its low end), with the rates per source."""
    from fakespotter.operating_point import choose_operating_point

    p, y, source = np.asarray(p_fake, np.float64), np.asarray(y), np.asarray(source)
    fake = y == 1
    threshold, per_source = 0.0, {}
    for i in range(len(sources)):
        mine = (source == i) & (y == 0)
        if mine.any():
            point = choose_operating_point(
                np.r_[p[mine], p[fake]], np.r_[np.zeros(mine.sum()), np.ones(fake.sum())],
                max_false_alarm=max_false_alarm, max_missed=max_missed,
            )  # fmt: skip
            threshold = max(threshold, point["threshold"])
    missed = int(np.floor(max_missed * fake.sum()))
    low = float(np.sort(p[fake])[missed]) if missed < fake.sum() else threshold
    band = [low, threshold] if low < threshold else None
    for i, name in enumerate(sources):
        mine = source == i
        if mine.any():
            per_source[name] = {
                "n": int(mine.sum()),
                "called_fake": float(np.mean(p[mine] >= threshold)),
            }
    return {
        "threshold": float(threshold),
        "uncertain": band,
        "max_false_alarm": max_false_alarm,
        "max_missed": max_missed,
        "n_real": int((y == 0).sum()),
        "n_fake": int(fake.sum()),
        "real_fake": float(np.mean(p[y == 0] >= threshold)),
        "fake_fake": float(np.mean(p[fake] >= threshold)),
        "per_source": per_source,
        "chosen_on": "out-of-fold scores of the update kit's faces and the new ones, "
        f"at most {max_false_alarm:.0%} of each real source called fake",
    }


def fit_real_novelty(
    detector, real_features: np.ndarray, real_source: np.ndarray | None = None, *, seed: int = 0
) -> dict:
    """The novelty signal from real faces only (a reference of diverse real photos, not the
    fakes of the training generators): fitted on 80% of them, the limit at the 99th
    percentile of the held-out rest (of each source, the highest of those), then refitted on
    all. Returns where the limit was chosen (the signal's ``info_``)."""
    F = np.asarray(real_features)
    src = np.zeros(len(F), np.int64) if real_source is None else np.asarray(real_source)
    order = np.random.default_rng(seed).permutation(len(F))
    cut = max(1, int(round(len(F) * (1 - NOVELTY_HELD_OUT))))
    detector.fit_novelty(F[order[:cut]])
    rest = order[cut:] if cut < len(F) else order
    distance = detector.novelty(F[rest])
    limit = max(
        float(np.percentile(distance[src[rest] == s], NOVELTY_PERCENTILE))
        for s in np.unique(src[rest])
    )
    info = {
        "chosen_on": "20% of the real training faces, held out of the fit (the highest of "
        f"each real source's {NOVELTY_PERCENTILE:g}th percentile)",
        "percentile": NOVELTY_PERCENTILE,
        "reference": "real faces only",
    }
    detector.fit_novelty(F).set_novelty_limit(limit, info)
    return info


def update_with_kit(
    detector,
    kit: UpdateKit,
    new: TrainingFeatures,
    *,
    new_weight: float | str = 1.0,
    operating_point: bool = True,
) -> dict:
    """Refit ``detector`` (thresholds kept) on the kit's rows plus ``new`` (full-width
    features of the new faces counted by ``detector``, as ``training.training_rows`` makes them;
    new real photos are rows with y = 0, under any source name, e.g. ``real``).

    The classifier: fitted at the model's C (not searched again) with the kit's row weights
    and ``new_weight`` for each new row (a number, or ``"source"``: each new source weighs as
    much as the average stored source of its class); then expressed in the model's own
    scaler (``CalibratedLinearSVM.in_scaler``), so that the model's novelty signal (fitted on
    all its training reals at train time; the kit holds too few to refit it) stays valid and
    is kept. The operating
    point, unless ``operating_point`` is False (a caller with held-out photos chooses its
    own): ``operating_point_per_source`` on the out-of-fold scores of every photo (copies
    left out), at most 1% of each real source called fake. Returns what it did.
    """
    import time

    from fakespotter.classifier import CalibratedLinearSVM
    from fakespotter.operating_point import OperatingPoint

    start = time.perf_counter()
    if new.features.shape[1] != kit.n_features or kit.n_features != len(detector.coef_):
        raise KitError(
            f"new faces have {new.features.shape[1]} features, the kit {kit.n_features}, "
            f"the model {len(detector.coef_)}"
        )
    model_scaler = detector.classifier_.scaler_mean_, detector.classifier_.scaler_scale_
    cols = np.asarray(kit.columns, dtype=np.int64)
    stored = kit.rows()
    narrow = TrainingFeatures(
        np.asarray(new.features)[:, cols], new.y, new.groups, new.source, list(new.sources)
    )
    rows = stored.extended(narrow) if len(new) else stored
    weight = np.r_[np.asarray(kit.weight, np.float64), _new_weights(kit, narrow, new_weight)]
    C = float(detector.C_)
    classifier = CalibratedLinearSVM((C,), detector.cv, detector.random_state).fit(
        rows.features, rows.y, groups=rows.groups, sample_weight=weight
    )
    photos = np.unique(rows.groups, return_index=True)[1]  # each group's first row
    out: dict[str, Any] = {"rows": rows.counts(), "C": C, "fitted": (rows, weight)}
    detector.set_classifier(classifier.in_scaler(cols, *model_scaler))
    if operating_point:
        point = _choose_point(classifier, kit, rows, photos, weight, narrow)
        detector.set_operating_point(OperatingPoint.from_record(point))
        out["operating_point"] = point
    out["seconds"] = time.perf_counter() - start
    return out


def extended_kit(kit: UpdateKit, fitted: tuple[TrainingFeatures, np.ndarray]) -> UpdateKit:
    """The kit of the model an update made: the rows it was fitted on (the kit's and the new
    ones, on the kit's columns) with their weights, coded again over their range (each value
    moves by at most half a step of the new code), so that the next update from that model
    keeps what this one taught. ``fitted``: ``update_with_kit``'s ``out["fitted"]``."""
    rows, weight = fitted
    features = np.asarray(rows.features, dtype=np.float32)
    codes, val_codes, low, step = quantize_with_held_out(features, kit.val_features())
    _, groups = np.unique(np.asarray(rows.groups), return_inverse=True)
    info = {k: v for k, v in kit.info.items() if k not in ("measured", "model_id")}
    info["rows_by_source_kit"] = rows.counts()
    info["updates"] = int(info.get("updates", 0)) + 1  # how many updates its rows came through
    return UpdateKit(
        codes=codes,
        columns=np.asarray(kit.columns, dtype=np.int32),
        low=low,
        step=step,
        y=np.asarray(rows.y).astype(np.int8),
        groups=groups.astype(np.int32),
        source=np.asarray(rows.source).astype(np.int16),
        weight=np.asarray(weight, dtype=np.float32),
        sources=list(rows.sources),
        fingerprint=kit.fingerprint,
        n_features=kit.n_features,
        info=info,
        val_codes=val_codes,
        val_y=kit.val_y,
    )


def _choose_point(classifier, kit: UpdateKit, rows, photos, weight, new: TrainingFeatures) -> dict:
    """The operating point after an update (``classifier``: on the kit's columns): on the
    kit's held-out photos as train chooses it (at most 1% of them called fake), and where
    the update adds real photos, no lower than what holds each new real source's out-of-fold
    photos to 1% too; a kit without held-out photos: every source's out-of-fold photos."""
    from fakespotter.operating_point import choose_operating_point

    val = kit.val_features()
    new_real = sorted({rows.sources.index(new.sources[s]) for s in new.source[new.y == 0]})
    point: dict = {}
    if val is not None:
        assert kit.val_y is not None  # stored together
        p_val = classifier.predict_proba(val)[:, 1]
        point = choose_operating_point(p_val, kit.val_y)
        point["chosen_on"] = "the update kit's held-out photos (those the model's was chosen on)"
        if not new_real:
            return point
    Z = (rows.features - classifier.scaler_mean_) / classifier.scaler_scale_
    d = _oof_decision(
        Z, rows.y, rows.groups, weight, classifier.C_, classifier.cv, classifier.random_state
    )
    del Z
    a, b = classifier.calibration_
    p = 1.0 / (1.0 + np.exp(-(a * d + b)))
    source = rows.source[photos]
    if val is not None:  # only the new real sources' photos guard the held-out point
        keep = (rows.y[photos] == 1) | np.isin(source, new_real)
        guard = operating_point_per_source(
            p[photos][keep], rows.y[photos][keep], source[keep], rows.sources
        )
        if guard["threshold"] > point["threshold"]:
            point.update(threshold=guard["threshold"], uncertain=guard["uncertain"])
        point["new_real_sources"] = guard["per_source"]
        point["chosen_on"] += ", no lower than 1% of each new real source's photos (out of fold)"
        return point
    return operating_point_per_source(p[photos], rows.y[photos], source, rows.sources)


def _new_weights(kit: UpdateKit, new: TrainingFeatures, how: float | str) -> np.ndarray:
    if not isinstance(how, str):
        return np.full(len(new), float(how))
    if how != "source":
        raise ValueError(f"new_weight must be a number or 'source', not {how!r}")
    w = np.ones(len(new))
    for label in (0, 1):
        stored = [
            kit.weight[(kit.source == i) & (kit.y == label)].sum() for i in range(len(kit.sources))
        ]
        stored = [v for v in stored if v > 0]
        for i in range(len(new.sources)):
            mine = (np.asarray(new.source) == i) & (np.asarray(new.y) == label)
            if mine.any() and stored:
                w[mine] = float(np.mean(stored)) / mine.sum()
    return w

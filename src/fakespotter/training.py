"""The rules of training and evaluation, in one place for the CLI, the Python API and the
benchmarks; and :func:`train`, a model from folders of photos (`fakespotter train`).

* An image counts by its **largest face** (the one a photo is about: ``largest_face``).
* An image where **no face is found counts as predicted real** (p_fake 0) when measuring: a
  detector that misses a face is no help against that fake.
* **Augmented training**: one randomly perturbed copy of every photo joins the training set
  (thresholds stay those of the photos themselves), and a copy stays in its photo's
  cross-validation fold, so C and the calibration are chosen on photos never seen in any form.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from fakespotter.errors import UserError
from fakespotter.faces.io import MAX_BYTES, MAX_PIXELS
from fakespotter.operating_point import OperatingPoint, choose_operating_point
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


# a face farther than this percentile of held-out *real* faces is flagged: the warning's
# false-alarm rate on photos like the training ones (reals spread wider than the fakes of the
# training generators: a limit from both classes flagged 2.4% of test reals, this one 1.5%)
NOVELTY_PERCENTILE = 99.0


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


# -- training a model from folders of photos (`fakespotter train`, fakespotter.train) ----------

Source = tuple[str, str]  # (name, folder): one source of photos
ReadFaces = Callable[..., LargestFaces]  # read(folder, label, **augment) -> its largest faces

# --augment: real photos draw from seed 1, the k-th fake source from seed 2 + k; the r-th
# recipe listed adds 1000 r, so a second recipe never repeats the first one's draws; a real
# source j after the first draws from 1 + 500 + j (up to 499 fake sources never share one)
AUGMENT_SEED = 1
RECIPE_SEED_STEP = 1000
REAL_SEED_OFFSET = 500
MIN_FACES_PER_CLASS = 5  # fewer faces of a class cannot be cross-validated


def folder_name(folder) -> str:
    """The name of a source given as a bare folder (``--real DIR``): the folder's own."""
    return Path(folder).name or os.fspath(folder)


def named_sources(value, kind: str) -> list[Source]:
    """A folder, a list of folders, or {name: folder}, as (name, folder) pairs; a bare folder
    is named after itself (as ``--real DIR``)."""
    if isinstance(value, dict):
        pairs = [(str(name), os.fspath(folder)) for name, folder in value.items()]
    else:
        folders = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        pairs = [(folder_name(f), os.fspath(f)) for f in folders]
    if not pairs:
        raise UserError(f"give at least one folder of {kind} photos")
    for _, folder in pairs:
        if not Path(folder).is_dir():
            raise UserError(f"{kind} photos: {folder} is not a folder")
    return pairs


def real_source(name: str) -> str:
    """A real source's name among the training features' sources (``trainingset``), apart
    from the fake sources' names: ``real``, or ``real:NAME``."""
    return "real" if name == "real" else f"real:{name}"


def source_label(kind: str, name: str) -> str:
    """A source on its progress bar: "real", "real wild", "fake stylegan"."""
    return kind if name == kind else f"{kind} {name}"


def model_sources(training: dict, kind: str) -> dict:
    """A model's real or fake sources, name -> {folder, n_faces}; models from before named
    sources have one of each (its real source is ``real`` in its training features too)."""
    named = training.get(f"{kind}_sources")
    if named:
        return dict(named)
    if training.get(kind) is None and not training.get(f"n_{kind}"):
        return {}
    return {kind: {"folder": training.get(kind), "n_faces": training.get(f"n_{kind}")}}


def check_sources(
    real: Sequence[Source], fake: Sequence[Source], training: dict | None = None
) -> None:
    """Each source of a training (and of the model it updates, ``training``) has a name of
    its own: the model file, the training features and evaluate's per-source metrics are
    keyed by it. A fake source is never named like a real one (``real``, ``real:...``)."""
    seen: dict[str, str] = {}
    for option, sources in (("--real", real), ("--fake", fake)):
        for name, folder in sources:
            if name in seen:
                raise UserError(
                    f"two sources are named {name!r} ({seen[name]} and {folder}): give each a "
                    f"name of its own, e.g. {option} other={folder}"
                )
            seen[name] = folder
    for name, folder in fake:
        if name == "real" or name.startswith("real:"):
            raise UserError(
                f"--fake {name}={folder}: {name!r} names real photos; give the fake source "
                "another name (NAME=DIR)"
            )
    if training is None:
        return
    real_names, fake_names = (
        set(model_sources(training, "real")),
        set(model_sources(training, "fake")),
    )
    for option, sources, other in (("--real", real, fake_names), ("--fake", fake, real_names)):
        for name, _ in sources:
            if name in other:
                kind = "fake" if option == "--real" else "real"
                raise UserError(
                    f"{option} {name}=...: the model already has a {kind} source named "
                    f"{name!r}; give this one another name"
                )


def folder_faces(
    cropper,
    folder,
    label: str,
    *,
    progress: bool = False,
    workers: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    name_no_face: bool = False,
    augment_seed: int | None = None,
    augmentation: str = "simple",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> LargestFaces:
    """:func:`largest_faces` of the image files under ``folder``; ``on_skip(path, reason)``
    hears of each unreadable image (and with ``name_no_face`` of each without a face).
    ``workers``: face-finding processes (default ``photos.default_workers``)."""
    from fakespotter.photos import default_workers, iter_files

    files = list(iter_files([os.fspath(folder)]))
    if not files:
        raise UserError(f"no image files found in {folder}")
    found = largest_faces(
        cropper,
        files,
        progress=progress,
        desc=label,
        workers=default_workers(len(files), cropper.aligned) if workers is None else workers,
        augment_seed=augment_seed,
        augmentation=augmentation,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
    )
    if on_skip is not None:
        for path, reason in found.unreadable + (
            [(p, NO_FACE) for p in found.no_face] if name_no_face else []
        ):
            on_skip(str(path), reason)
    return found


def sources_faces(cropper, real: Sequence[Source], fake: Sequence[Source], prefix: str, **reading):
    """``read`` (:func:`folder_faces` with ``reading``: for copies and held-out photos) and
    the largest faces of each real and each fake source, each image left out named (its
    progress bar says "{prefix}real NAME", "{prefix}fake NAME")."""
    read: ReadFaces = partial(folder_faces, cropper, **reading)
    per_real = [
        read(folder, source_label(f"{prefix}real", name), name_no_face=True)
        for name, folder in real
    ]
    per_fake = [
        read(folder, source_label(f"{prefix}fake", name), name_no_face=True)
        for name, folder in fake
    ]
    return read, per_real, per_fake


def training_rows(
    det,
    read: ReadFaces,
    features,
    real: Sequence[Source],
    per_real,
    fake: Sequence[Source],
    per_fake,
    augment: Sequence[str] = (),
):
    """The training faces as ``trainingset.TrainingFeatures``: the photos' ``features`` (each
    real source in turn, then each fake source), then for each recipe in ``augment`` one
    altered copy of each photo (``read`` crops them), counted by ``det``, in its photo's group
    (cross-validation fold). Real sources are named by :func:`real_source`."""
    from fakespotter.trainingset import TrainingFeatures

    n_real = sum(len(f.crops) for f in per_real)
    y = np.r_[np.zeros(n_real, int), np.ones(len(features) - n_real, int)]
    parts = [*per_real, *per_fake]
    source = np.repeat(np.arange(len(parts)), [len(f.crops) for f in parts])
    names = [real_source(name) for name, _ in real] + [name for name, _ in fake]
    rows = TrainingFeatures(features, y, np.arange(len(y)), source, names)
    if not augment:
        return rows
    copies = []
    for r, recipe in enumerate(augment):
        seed = AUGMENT_SEED + RECIPE_SEED_STEP * r
        copies += [
            read(folder, f"{source_label('real', name)}, {recipe} copy",
                 augment_seed=seed if j == 0 else seed + REAL_SEED_OFFSET + j,
                 augmentation=recipe)
            for j, (name, folder) in enumerate(real)
        ]  # fmt: skip
        copies += [
            read(folder, f"fake {name}, {recipe} copy", augment_seed=seed + 1 + k,
                 augmentation=recipe)
            for k, (name, folder) in enumerate(fake)
        ]  # fmt: skip
    found = merge_faces(copies)
    photos = [p for f in parts for p in f.paths]
    keep, copy_of = copies_of(photos, found.paths)
    if not keep.any():
        return rows
    copy_features = det.transform(found.crops[keep])
    return TrainingFeatures(
        np.concatenate([features, copy_features]),
        np.r_[y, y[copy_of]],
        np.r_[rows.groups, copy_of],
        np.r_[source, source[copy_of]],
        rows.sources,
    )


def fit_operating_point(
    det,
    features,
    y,
    read: ReadFaces,
    val_real=None,
    val_fake=None,
    *,
    by: str = "train",
    novelty: bool = True,
) -> dict | None:
    """The novelty signal, and with held-out photos (``read`` crops them) the operating point;
    ``by``: the command choosing them (train, update), recorded with where they came from;
    ``novelty`` False: the operating point only (an update from a kit keeps the signal).
    Returns the point chosen on the held-out photos, with its rates there, or None."""
    if not val_real:
        limit = held_out_novelty_threshold(det, features, y)
        det.set_novelty_limit(
            limit,
            {
                "chosen_on": "the real faces of 20% of the training faces, held out of the fit",
                "percentile": NOVELTY_PERCENTILE,
                "chosen_by": by,
            },
        )
        return None
    if novelty:
        det.fit_novelty(features)
    sets = [(read(folder, name), label)
            for folder, name, label in ((val_real, "val real", 0), (val_fake, "val fake", 1))]  # fmt: skip
    scored = score_labelled(det, sets)
    point = choose_operating_point(scored["p_fake"], scored["labels"])
    det.set_operating_point(
        OperatingPoint.from_record(
            {**point, "chosen_on": f"{val_real} + {val_fake}", "chosen_by": by}
        )
    )
    if novelty:
        n_real = len(sets[0][0].crops)  # the features' rows: val real faces, then val fake
        det.set_novelty_limit(
            novelty_threshold(det.novelty(scored["features"][:n_real])),
            {"chosen_on": f"{val_real}", "percentile": NOVELTY_PERCENTILE, "chosen_by": by},
        )
    return point


@dataclass
class TrainingRecord:
    """What a training did: ``info`` is what the model file records of it (``save_model``'s
    ``training``: sources, counts, command, date, the averages the web page draws), ``rows``
    the training faces' features (``trainingset``), ``operating_point`` the point chosen on
    held-out photos with its rates there (None: the plain 0.5), and the images left out."""

    info: dict
    rows: object  # trainingset.TrainingFeatures
    operating_point: dict | None = None
    no_face: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # (image, reason)
    # an update's: the rows it refitted on beside the new ones, how it set the operating
    # point ("chosen again", "chosen again with the update kit", "kept"), the next update kit
    n_stored: int = 0
    n_new: int = 0
    operating_point_how: str = "chosen"
    next_kit: object | None = None

    @property
    def n_real(self) -> int:
        return int(self.info["n_real"])

    @property
    def n_fake(self) -> int:
        return int(self.info["n_fake"])


def train(
    real,
    fake,
    *,
    backbone: str = "sface",
    variant: str = "channel",
    neuron: str = "raw",
    aligned: bool = False,
    taps: int | None = None,
    augment: Sequence[str] = (),
    val_real=None,
    val_fake=None,
    face_detector: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    workers: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    command: str | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
):
    """Train a detector on folders of real and fake face photos: ``(detector, TrainingRecord)``.

    ``real`` and ``fake``: a folder, a list of folders, or {name: folder} (each one a named
    source). With ``val_real`` and ``val_fake`` (held-out photos) the operating point and the
    novelty limit are chosen on them; without, the plain 0.5 cut-off and a novelty limit from
    held-out training faces. The other options are `fakespotter train`'s; ``on_skip(path,
    reason)`` hears of each image left out, ``command`` is recorded as the training's command.
    """
    import datetime

    from fakespotter.detector import LAYER_MEANS_KEY, FakeSpotter
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges
    from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR

    real_dirs, fake_dirs = named_sources(real, "real"), named_sources(fake, "fake")
    if bool(val_real) != bool(val_fake):
        raise UserError("val_real and val_fake go together (--val-real and --val-fake)")
    check_sources(real_dirs, fake_dirs)
    det = FakeSpotter(
        backbone=backbone, variant=variant, neuron=neuron, progress=progress, taps=taps,
        device=device, face_detector=face_detector or DEFAULT_FACE_DETECTOR,
    )  # fmt: skip
    cropper = det.face_cropper(aligned)
    read, per_real, per_fake = sources_faces(
        cropper, real_dirs, fake_dirs, "", progress=progress, workers=workers, on_skip=on_skip,
        max_pixels=max_pixels, max_bytes=max_bytes,
    )  # fmt: skip
    found_real, found_fake = merge_faces(per_real), merge_faces(per_fake)
    n_real, n_fake = len(found_real.crops), len(found_fake.crops)
    if min(n_real, n_fake) < MIN_FACES_PER_CLASS:
        raise UserError(
            f"need at least {MIN_FACES_PER_CLASS} faces of each class, found {n_real} real "
            f"and {n_fake} fake"
        )
    X = np.concatenate([found_real.crops, found_fake.crops])
    y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    features = det.fit_thresholds(X).transform(X)  # = det.fit(X, y), keeping the features
    rows = training_rows(det, read, features, real_dirs, per_real, fake_dirs, per_fake, augment)
    # copies share their photo's cross-validation fold; without copies, plain stratified folds
    det.fit_features(rows.features, rows.y, groups=rows.groups if augment else None)
    no_face = found_real.no_face + found_fake.no_face
    unreadable = found_real.unreadable + found_fake.unreadable
    info = {
        "n_real": n_real,
        "n_fake": n_fake,
        "n_no_face": len(no_face),
        "n_unreadable": len(unreadable),
        "real": ", ".join(str(folder) for _, folder in real_dirs),
        "fake": ", ".join(str(folder) for _, folder in fake_dirs),
        "real_sources": sources_record(real_dirs, per_real),
        "fake_sources": sources_record(fake_dirs, per_fake),
        "aligned": aligned,
        "augment": list(augment or ()),
        "command": command or "fakespotter.train (Python)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if variant != "embedding":  # the web page draws a face against these averages
        info[LAYER_MEANS_KEY] = det.layer_means(features, y)
        info[LAYER_DECISION_KEY] = decision_ranges(det, features, y)
    point = fit_operating_point(det, features, y, read, val_real, val_fake)
    if not val_real:  # said in the file, so `info` can say where the 0.5 came from
        det.set_operating_point(OperatingPoint(chosen_on=None, chosen_by="train"))
    return det, TrainingRecord(info, rows, point, no_face, unreadable)


def sources_record(sources: Sequence[Source], faces: Sequence[LargestFaces]) -> dict:
    """name -> {folder, n_faces}: what the model file records of each source."""
    return {
        name: {"folder": str(folder), "n_faces": len(f.crops)}
        for (name, folder), f in zip(sources, faces, strict=True)
    }


def update(
    det,
    real=(),
    fake=(),
    *,
    kit=None,
    stored=None,
    aligned: bool = False,
    augment: Sequence[str] = (),
    val_real=None,
    val_fake=None,
    progress: bool = False,
    workers: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    command: str | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
):
    """Teach the fitted detector ``det`` new photos without a full retrain (`fakespotter
    update`): ``(det, TrainingRecord)``, ``det`` refitted in place.

    Only the new photos are counted, with the model's own thresholds; the classifier is
    refitted on stored rows plus the new ones: the update ``kit`` (``updatekit``; the record
    then holds the next kit, these faces included) or the training features ``stored``
    (``trainingset``). The operating point is chosen again on ``val_real`` and ``val_fake``
    when given, else on the kit's held-out rows; with ``stored`` and no held-out photos the
    model's is kept. ``real`` and ``fake`` name sources as :func:`train`'s do.
    """
    import datetime
    from dataclasses import replace

    from fakespotter.detector import LAYER_MEANS_KEY
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges

    real_dirs = named_sources(real, "real") if real else []
    fake_dirs = named_sources(fake, "fake") if fake else []
    if not real_dirs and not fake_dirs:
        raise UserError("give the new photos: fake and/or real folders (--fake, --real)")
    if bool(val_real) != bool(val_fake):
        raise UserError("val_real and val_fake go together (--val-real and --val-fake)")
    if (kit is None) == (stored is None):
        raise UserError("an update refits on an update kit or on training features: give one")
    training = dict(getattr(det, "training_", {}))
    check_sources(real_dirs, fake_dirs, training)
    det.progress = progress
    cropper = det.face_cropper(aligned)
    read, per_real, per_fake = sources_faces(
        cropper, real_dirs, fake_dirs, "new ", progress=progress, workers=workers,
        on_skip=on_skip, max_pixels=max_pixels, max_bytes=max_bytes,
    )  # fmt: skip
    crops = np.concatenate([p.crops for p in per_real + per_fake])
    if not len(crops):
        raise UserError("no faces found in the new photos")
    new = training_rows(
        det, read, det.transform(crops), real_dirs, per_real, fake_dirs, per_fake, augment
    )
    # the refit voids the operating point: without held-out photos the model's is kept
    kept = det.operating_point_
    if not training.get("updates") and kept.chosen_by is None:
        kept = replace(kept, chosen_by="train")  # a file from before #27 chose it at train time
    done: dict = {}
    if kit is not None:
        # the kit's rows (weighted to stand for every training face) plus the new ones; the
        # point is chosen again on out-of-fold scores (at most 1% of each real source
        # called fake) unless held-out photos are given; the novelty reference is the reals
        from fakespotter.updatekit import extended_kit, update_with_kit

        done = update_with_kit(det, kit, new, operating_point=not val_real)
        rows = done["fitted"][0]  # what was fitted: the kit's rows and the new ones, its columns
        n_stored = len(kit)
    else:
        rows = stored.extended(new)
        det.set_params(Cs=(float(det.C_),))  # the model's regularization, not searched again
        det.fit_features(rows.features, rows.y, groups=rows.groups)
        n_stored = len(stored)
    photos = np.unique(rows.groups, return_index=True)[1]  # each group's first row: the photo
    how = (
        "chosen again"
        if val_real
        else ("chosen again with the update kit" if kit is not None else "kept")
    )
    training.update(
        n_real=int(training.get("n_real") or 0) + sum(len(f.crops) for f in per_real),
        n_fake=int(training.get("n_fake") or 0) + sum(len(f.crops) for f in per_fake),
        real_sources=merged_sources(model_sources(training, "real"), real_dirs, per_real),
        fake_sources=merged_sources(model_sources(training, "fake"), fake_dirs, per_fake),
        updates=[
            *training.get("updates", []),
            {
                "command": command or "fakespotter.training.update (Python)",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "added": {
                    **{
                        real_source(name): len(f.crops)
                        for (name, _), f in zip(real_dirs, per_real, strict=True)
                    },
                    **{
                        name: len(f.crops) for (name, _), f in zip(fake_dirs, per_fake, strict=True)
                    },
                },
                "rows": rows.counts(),
                "stored": "update kit" if kit is not None else "features file",
                "operating_point": how,
            },
        ],
    )
    training["real"] = ", ".join(
        str(s.get("folder")) for s in training["real_sources"].values() if s.get("folder")
    )
    if det.variant != "embedding" and kit is None:  # a kit keeps some columns: averages stay
        training[LAYER_MEANS_KEY] = det.layer_means(rows.features[photos], rows.y[photos])
        training[LAYER_DECISION_KEY] = decision_ranges(det, rows.features[photos], rows.y[photos])
    point = None
    if kit is None or val_real:  # update_with_kit kept the novelty signal (valid still)
        point = fit_operating_point(
            det, rows.features[photos], rows.y[photos], read, val_real, val_fake,
            by="update", novelty=kit is None,
        )  # fmt: skip
    if kit is not None and not val_real:
        point = done.get("operating_point")
    elif not val_real:
        kept_by = int(kept.record.get("kept_by_updates", 0)) + 1
        det.set_operating_point(replace(kept, record={**kept.record, "kept_by_updates": kept_by}))
    no_face = [p for f in per_real + per_fake for p in f.no_face]
    unreadable = [u for f in per_real + per_fake for u in f.unreadable]
    record = TrainingRecord(
        training, rows, point, no_face, unreadable, n_stored=n_stored, n_new=len(new),
        operating_point_how=how,
        next_kit=extended_kit(kit, done["fitted"]) if kit is not None else None,
    )  # fmt: skip
    return det, record


def merged_sources(old: dict, sources: Sequence[Source], faces: Sequence[LargestFaces]) -> dict:
    """A model's record of its sources with the new photos of ``sources`` added by name."""
    merged = dict(old)
    for (name, folder), f in zip(sources, faces, strict=True):
        before = merged.get(name, {})
        merged[name] = {
            "folder": ", ".join(str(d) for d in (before.get("folder"), folder) if d),
            "n_faces": int(before.get("n_faces") or 0) + len(f.crops),
        }
    return merged

"""Teaching the shipped model new generators (issue #28): the wider real side, the update kit,
the novelty warning and the learning curve, measured on ../shared/faces.

    python -m benchmarks.train_default --recipe shipped --wide-real \\
        --output out/teach/candidate.safetensors \\
        --save-features out/teach/train-features.npz           # the candidate (CLI, ~70 min)
    python -m benchmarks.teach folders                         # out/teach/*: symlink folders
    python -m benchmarks.teach features --model default --model out/teach/candidate.safetensors
    python -m benchmarks.teach compare     # item 2: old vs new model, held-out real halves, LOSO
    python -m benchmarks.teach designs     # item 1: kit designs against a refit on all rows
    python -m benchmarks.teach build-kit   # item 1: the chosen kit -> out/teach/candidate.kit...
    python -m benchmarks.teach novelty     # item 4
    python -m benchmarks.teach curve       # item 5: per generator, kit without it + k faces
    python -m benchmarks.teach time-update # item 1: 100 new faces end to end, seconds and memory

Data rules (../shared/faces/README.md): training may use train/ and the *first* half (sorted
file names) of wild/real (UTKFace) and studio/real (CIPLAB); val/ makes choices (operating
point); test/ and the *second* halves are measures only. Every stage writes JSON under
out/teach/ and prints markdown; docs/teaching.md quotes them.

Simplifications, stated where they matter: the per-layer thresholds (coverage) are those of the
candidate model, fitted on all its training faces, also when a generator or a real source is
"left out" (the classifier, scaler and operating point are refitted without it; the same
simplification as benchmarks/learning_curve.py, whose table shows it is small). `designs` fits
the SVM on a precomputed Gram matrix with the model's own scaler (one matrix for every fit);
`curve` runs the product's path (``updatekit.update_with_kit``) end to end on features.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
# TEACH_OUT: another folder for a smoke run on a few faces (its own val-real, test-real, ...
# symlink folders stand in for ../shared/faces' where they exist)
OUT = Path(os.environ.get("TEACH_OUT", ROOT / "out" / "teach")).absolute()
GENERATORS = ("sg1", "sgx", "tpdne")
REAL_SOURCES = ("ffhq", "utk", "ciplab")
SHIPPED = ROOT / "src" / "fakespotter" / "data" / "default.safetensors"
CANDIDATE = OUT / "candidate.safetensors"
TRAIN_FEATURES = OUT / "train-features.npz"
TRAIN_LOG = OUT / "train.log"
# measured folders: (name, folder); val/ for choices, the rest measures
EVAL = {
    **{
        f"{split}-{kind}": OUT / f"{split}-{kind}"
        if (OUT / f"{split}-{kind}").is_dir()
        else FACES / split / kind
        for split in ("val", "test")
        for kind in ("real", "fake")
    },
    "wild-second": OUT / "wild-second",
    "studio-second": OUT / "studio-second",
    "wild-first": OUT / "wild-first",
    "studio-first": OUT / "studio-first",
}
KS = (0, 25, 50, 100, 200)


def short(path) -> str:
    """The file name's short source name: ffhq, utk, ciplab, sg1, tpdne, sgx."""
    return Path(path).name.split("-", 1)[0]


def halves(folder: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    return files[: len(files) // 2], files[len(files) // 2 :]


# -- folders ---------------------------------------------------------------------------------


def cmd_folders(args) -> None:
    """Symlink folders: the wider real side for training, the halves, per-generator fakes."""
    from benchmarks.train_default import first_half, link_folder, wide_real_folders

    real, fakes = wide_real_folders(FACES)
    print(f"{real}: {len(list(real.iterdir()))} files")
    wild_first, wild_second = halves(FACES / "wild" / "real")
    studio_first, studio_second = halves(FACES / "studio" / "real")
    assert wild_first == first_half(FACES / "wild" / "real")
    for name, files in (
        ("wild-first", wild_first),
        ("wild-second", wild_second),
        ("studio-first", studio_first),
        ("studio-second", studio_second),
    ):
        print(f"{link_folder(name, files)}: {len(files)} files")
    for split in ("val", "test"):
        listed = sorted((FACES / split / "fake").iterdir())
        for g in GENERATORS:
            files = [p for p in listed if short(p) == g]
            print(f"{link_folder(f'{split}-fake-{g}', files)}: {len(files)} files")


# -- features of the measured folders --------------------------------------------------------


def crops_of(name: str, folder: Path, cropper) -> dict:
    """The largest face of every image of ``folder`` (MTCNN, as `detect`), cached: both
    models share the face detector and crop size."""
    from fakespotter.training import largest_faces

    cache = OUT / "crops" / f"{name}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    found = largest_faces(cropper, files, progress=True, desc=name)
    out = {
        "crops": found.crops,
        "paths": np.array([Path(p).name for p in found.paths]),
        "no_face": np.array([Path(p).name for p in found.no_face] + [""])[:-1],
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def model_path(name: str) -> Path:
    return SHIPPED if name == "default" else Path(name)


def features_file(model: str, name: str) -> Path:
    tag = "default" if model == "default" else Path(model).stem
    return OUT / "features" / tag / f"{name}.npz"


def cmd_features(args) -> None:
    from fakespotter.persistence import load_model

    for model in args.model:
        det = load_model(model_path(model))
        cropper = det.face_cropper()
        for name, folder in EVAL.items():
            if args.only and name not in args.only:
                continue
            path = features_file(model, name)
            if path.exists():
                continue
            c = crops_of(name, folder, cropper)
            start = time.perf_counter()
            F = det.transform(c["crops"])
            print(f"{model} {name}: {len(F)} faces counted in {time.perf_counter() - start:.0f} s")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, features=F.astype(np.float32), paths=c["paths"], no_face=c["no_face"])


def load_eval(model: str, names=None) -> dict:
    """name -> {features, paths, no_face, y, short}."""
    out = {}
    for name in names or EVAL:
        path = features_file(model, name)
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        d["short"] = np.array([short(p) for p in d["paths"]])
        d["y"] = np.array([0 if s in REAL_SOURCES else 1 for s in d["short"]])
        out[name] = d
    return out


# -- the candidate's training rows -----------------------------------------------------------


def training_rows(det):
    """The candidate's training features, with each row's source: real:ffhq / real:utk /
    real:ciplab (from the file names of train-real, minus the images the train log names as
    skipped) or the generator."""
    from fakespotter.trainingset import load_training_features

    rows = load_training_features(TRAIN_FEATURES, det)
    # by file name: the log names them under the folder train read (out/teach/train-real)
    skipped = {
        Path(p).name for p in re.findall(r"^skipped (\S+):", TRAIN_LOG.read_text(), flags=re.M)
    }
    real_files = [p.name for p in sorted((OUT / "train-real").iterdir()) if p.name not in skipped]
    photo_real = (rows.y == 0) & (rows.groups == np.arange(len(rows)))
    n_real_photos = int(photo_real.sum())
    if n_real_photos != len(real_files):
        raise SystemExit(
            f"train-real has {len(real_files)} images with a face by the log, the features "
            f"{n_real_photos} real photos: cannot name the rows' sources"
        )
    photo_source = np.array([f"real:{short(f)}" for f in real_files] + [""] * (len(rows)))
    names = []
    for i in range(len(rows)):
        g = rows.groups[i]
        if rows.y[i] == 0:
            names.append(photo_source[g])  # a copy's group is its photo's row
        else:
            names.append(rows.sources[rows.source[i]])
    return rows, np.array(names)


# -- shared measures -------------------------------------------------------------------------


def scores(det, d: dict) -> np.ndarray:
    """P(fake) of every image of a folder: faces scored, images without one count as real."""
    p = det.predict_proba(features=d["features"])[:, 1] if len(d["features"]) else np.zeros(0)
    return np.r_[p, np.zeros(len(d["no_face"]))]


def labels_of(d: dict) -> np.ndarray:
    return np.r_[d["y"], [0 if short(p) in REAL_SOURCES else 1 for p in d["no_face"]]]


def shorts_of(d: dict) -> np.ndarray:
    return np.r_[d["short"], [short(p) for p in d["no_face"]]].astype(str)


def measure_model(det, ev: dict, threshold: float | None = None) -> dict:
    """Test AUC, test false alarms, caught per generator, held-out real halves called fake,
    at the model's operating threshold (or ``threshold``)."""
    from sklearn.metrics import roc_auc_score

    t = det.threshold_ if threshold is None else threshold
    out: dict = {"threshold": float(t)}
    p = np.r_[scores(det, ev["test-real"]), scores(det, ev["test-fake"])]
    y = np.r_[labels_of(ev["test-real"]), labels_of(ev["test-fake"])]
    s = np.r_[shorts_of(ev["test-real"]), shorts_of(ev["test-fake"])]
    out["test_auc"] = float(roc_auc_score(y, p))
    out["test_real_called_fake"] = float(np.mean(p[y == 0] >= t))
    out["test_fake_caught"] = float(np.mean(p[y == 1] >= t))
    for g in GENERATORS:
        out[f"caught_{g}"] = float(np.mean(p[s == g] >= t))
    for name in ("wild-second", "studio-second", "wild-first", "studio-first"):
        if name in ev:
            out[f"{name}_called_fake"] = float(np.mean(scores(det, ev[name]) >= t))
    return out


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def write(name: str, obj) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(obj, indent=2))
    print(f"wrote {OUT / name}.json")


# -- item 2: old vs new ----------------------------------------------------------------------


def cmd_compare(args) -> None:
    from fakespotter.persistence import load_model

    results = {}
    for model in ("default", str(CANDIDATE)):
        det = load_model(model_path(model))
        results["shipped" if model == "default" else "candidate"] = measure_model(
            det, load_eval(model)
        )
    # leave one real source out: the candidate's classifier refitted without it (thresholds
    # kept), its operating point chosen on val as train does; measured on all of that source
    det = load_model(CANDIDATE)
    rows, names = training_rows(det)
    ev = load_eval(str(CANDIDATE))
    for left, second in (
        ("real:ciplab", "studio-second"),
        ("real:utk", "wild-second"),
    ):
        keep = names != left
        loso = load_model(CANDIDATE)
        loso.Cs = (det.C_,)
        loso.fit_features(rows.features[keep], rows.y[keep], groups=rows.groups[keep])
        point = val_point(loso, ev)
        left_rows = (names == left) & (rows.groups == np.arange(len(rows)))  # its photos
        p_first = loso.predict_proba(features=rows.features[left_rows])[:, 1]
        p_second = scores(loso, ev[second])
        m = measure_model(loso, ev, point)
        m[f"all_{left}_called_fake"] = float(np.mean(np.r_[p_first, p_second] >= point))
        results[f"candidate without {left}"] = m
        print(left, json.dumps(m))
    write("compare", results)
    keys = [
        ("test_auc", "test AUC", lambda v: f"{v:.4f}"),
        ("test_real_called_fake", "test reals called fake", pct),
        ("test_fake_caught", "test fakes caught", pct),
        *((f"caught_{g}", f"{g} caught", pct) for g in GENERATORS),
        ("wild-second_called_fake", "wild/real 2nd half called fake", pct),
        ("studio-second_called_fake", "studio/real 2nd half called fake", pct),
        ("all_real:ciplab_called_fake", "all of studio/real called fake", pct),
        ("all_real:utk_called_fake", "all of wild/real called fake", pct),
        ("threshold", "operating threshold", lambda v: f"{v:.3f}"),
    ]
    cols = list(results)
    print("| measure | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for key, label, fmt in keys:
        cells = [fmt(results[c][key]) if key in results[c] else "" for c in cols]
        print(f"| {label} | " + " | ".join(cells) + " |")


def val_point(det, ev: dict) -> float:
    """The threshold train would choose on val (at most 1% of val reals called fake)."""
    from fakespotter.operating_point import choose_operating_point

    p = np.r_[scores(det, ev["val-real"]), scores(det, ev["val-fake"])]
    y = np.r_[labels_of(ev["val-real"]), labels_of(ev["val-fake"])]
    return choose_operating_point(p, y)["threshold"]


# -- item 1: kit designs --------------------------------------------------------------------


def standardized(det, F: np.ndarray) -> np.ndarray:
    return ((F - det.classifier_.scaler_mean_) / det.classifier_.scaler_scale_).astype(np.float32)


def gram(A: np.ndarray, B: np.ndarray, block: int = 2048) -> np.ndarray:
    """A @ B.T in float32, in row blocks of A (bounded scratch memory)."""
    out = np.empty((len(A), len(B)), np.float32)
    for i in range(0, len(A), block):
        out[i : i + block] = A[i : i + block] @ B.T
    return out


class Study:
    """The candidate's training rows and measured faces, standardized by its scaler, with
    one Gram matrix over all of them (cached: out/teach/gram.npy)."""

    def __init__(self) -> None:
        from fakespotter.persistence import load_model

        self.det = load_model(CANDIDATE)
        rows, self.names = training_rows(self.det)
        self.y_train, self.groups = rows.y, rows.groups
        self.photo = rows.groups == np.arange(len(rows))
        self.ev = load_eval(str(CANDIDATE))
        self.measured = ["val-real", "val-fake", "test-real", "test-fake"]
        self.measured += ["wild-second", "studio-second"]
        parts = [rows.features] + [self.ev[n]["features"] for n in self.measured]
        del rows
        n = sum(len(p) for p in parts)
        self.Z = np.empty((n, parts[0].shape[1]), np.float32)
        at, self.where = 0, {}
        for name, part in zip(["train", *self.measured], parts, strict=True):
            self.Z[at : at + len(part)] = standardized(self.det, part)
            self.where[name] = np.arange(at, at + len(part))
            at += len(part)
        del parts
        self.n_train = len(self.where["train"])
        self.E = np.concatenate([self.where[n] for n in self.measured])
        cache = OUT / "gram.npy"
        if cache.exists() and np.load(cache, mmap_mode="r").shape == (n, n):
            self.G = np.load(cache, mmap_mode="r")
        else:
            start = time.perf_counter()
            self.G = gram(self.Z, self.Z)
            print(f"Gram matrix {n} x {n} in {time.perf_counter() - start:.0f} s", flush=True)
            np.save(cache, self.G)
        d = (
            self.Z[: self.n_train] @ self.det.coef_.astype(np.float32)
            + self.det.classifier_.intercept_
        )
        self.margin = np.where(self.y_train == 1, 1, -1) * d  # small: near the boundary

    def train_rows(self, without: str | None = None) -> np.ndarray:
        keep = np.ones(self.n_train, bool) if without is None else self.names != without
        return np.flatnonzero(keep)

    def pool(self, g: str, n: int, seed: int) -> np.ndarray:
        """Up to ``n`` of generator g's training photos (the new faces are drawn from them)."""
        mine = np.flatnonzero((self.names == g) & self.photo)
        return np.sort(np.random.default_rng(seed).choice(mine, min(n, len(mine)), replace=False))

    def measure(self, decision: np.ndarray) -> dict:
        """From decision values on the measured faces (rows of self.E, in order): threshold
        at 1% of val reals called fake (as train chooses it), caught per generator on test,
        test reals and held-out halves called fake."""
        from sklearn.metrics import roc_auc_score

        from fakespotter.operating_point import choose_operating_point

        out, at, d = {}, 0, {}
        for name in self.measured:
            k = len(self.where[name])
            # images without a face count as real: the lowest score
            d[name] = np.r_[decision[at : at + k], np.full(len(self.ev[name]["no_face"]), -1e9)]
            at += k
        y_val = np.r_[labels_of(self.ev["val-real"]), labels_of(self.ev["val-fake"])]
        t = choose_operating_point(np.r_[d["val-real"], d["val-fake"]], y_val)["threshold"]
        fake_short = shorts_of(self.ev["test-fake"])
        y_test = np.r_[np.zeros(len(d["test-real"])), np.ones(len(d["test-fake"]))]
        out["test_auc"] = float(roc_auc_score(y_test, np.r_[d["test-real"], d["test-fake"]]))
        for g in GENERATORS:
            out[f"caught_{g}"] = float(np.mean(d["test-fake"][fake_short == g] >= t))
        for name in ("test-real", "wild-second", "studio-second"):
            out[f"{name}_called_fake"] = float(np.mean(d[name] >= t))
        return out

    def fit(self, S: np.ndarray, w: np.ndarray, K_SS, K_ES, C_times: float = 1) -> np.ndarray:
        from sklearn.svm import SVC

        svm = SVC(kernel="precomputed", C=float(self.det.C_) * C_times, cache_size=2000)
        svm.fit(np.asarray(K_SS, np.float64), self.y_all(S), w)
        return svm.decision_function(np.asarray(K_ES, np.float64))

    def y_all(self, idx: np.ndarray) -> np.ndarray:
        return self.y_train[idx]  # training rows only are ever fitted on


def kit_rows(study: Study, candidates: np.ndarray, per_class: int, how: str, seed: int):
    """The rows of a kit drawn from ``candidates`` (training row indices) and their weights
    (``updatekit.build_kit``'s rule)."""
    from fakespotter.trainingset import TrainingFeatures
    from fakespotter.updatekit import choose_rows

    names = study.names[candidates]
    sources = sorted(set(names))
    source = np.array([sources.index(n) for n in names])
    view = TrainingFeatures(
        np.zeros((len(candidates), 1), np.float32),
        study.y_train[candidates],
        study.groups[candidates],
        source,
        sources,
    )
    if how.startswith("photos"):
        keep = study.photo[candidates]
        view = TrainingFeatures(
            view.features[keep], view.y[keep], view.groups[keep], source[keep], sources
        )
        candidates, source = candidates[keep], source[keep]
    margin = study.margin[candidates] if "margin" in how else None
    picked = choose_rows(view, per_class, margin=margin, seed=seed)
    full = np.bincount(source, minlength=len(sources))
    kept = np.bincount(source[picked], minlength=len(sources))
    weight = full[source[picked]] / np.maximum(kept[source[picked]], 1)
    return candidates[picked], weight


def top_columns(det, share: float) -> np.ndarray:
    k = int(round(share * len(det.coef_)))
    return np.sort(np.argsort(-np.abs(det.coef_))[:k])


DESIGNS = {
    # name: (rows per class, how rows are picked, columns kept (share by |SVM weight|),
    #        8-bit, stored rows weighted, weight of each new face: 1 or "source")
    "kit 300/class, random": (300, "random", 1.0, True, True, 1),
    "kit 300/class, nearest first": (300, "margin", 1.0, True, True, 1),
    "kit 300/class, nearest first, float": (300, "margin", 1.0, False, True, 1),
    "kit 300/class, nearest first, unweighted": (300, "margin", 1.0, True, False, 1),
    "kit 300/class, photos only, nearest first": (300, "photos margin", 1.0, True, True, 1),
    "kit 600/class, nearest first, top 50% columns": (600, "margin", 0.5, True, True, 1),
    "kit 600/class, random, top 50% columns": (600, "random", 0.5, True, True, 1),
    "kit 1000/class, nearest first, top 30% columns": (1000, "margin", 0.3, True, True, 1),
    "kit 600/class, nearest first, all columns (over budget)": (600, "margin", 1.0, True, True, 1),
    # round 2: random rows (the SVM at the model's C leans on every row, not a few), more
    # rows and fewer columns, and the new faces weighing as much as a stored fake source
    "kit 1000/class, random, top 30% columns": (1000, "random", 0.3, True, True, 1),
    "kit 1000/class, random, top 30% columns, new as a source": (
        1000,
        "random",
        0.3,
        True,
        True,
        "source",
    ),
    "kit 1500/class, random, top 20% columns": (1500, "random", 0.2, True, True, 1),
    "kit 1500/class, random, top 20% columns, new as a source": (
        1500,
        "random",
        0.2,
        True,
        True,
        "source",
    ),
    "kit 1500/class, random photos, top 20% columns, new as a source": (
        1500,
        "photos random",
        0.2,
        True,
        True,
        "source",
    ),
    "kit 300/class, random, new as a source": (300, "random", 1.0, True, True, "source"),
    "kit 2500/class, random, top 12% columns, new as a source": (
        2500,
        "random",
        0.12,
        True,
        True,
        "source",
    ),
    # round 3: distinct photos rather than photos + their augmented copies, more of them
    "kit 2500/class, random photos, top 12% columns, new as a source": (
        2500,
        "photos random",
        0.12,
        True,
        True,
        "source",
    ),
    "kit 3300/class, random photos, top 9% columns, new as a source": (
        3300,
        "photos random",
        0.09,
        True,
        True,
        "source",
    ),
    "kit 1500/class, random photos, top 20% columns": (1500, "photos random", 0.2, True, True, 1),
    # round 4: the SVM's C (the model's, 1e-4, is strong regularization: rows barely move it)
    "kit 1500/class, random photos, top 20% columns, new as a source, C x10": (
        1500,
        "photos random",
        0.2,
        True,
        True,
        "source",
        10,
    ),
    "kit 1500/class, random photos, top 20% columns, new as a source, C x100": (
        1500,
        "photos random",
        0.2,
        True,
        True,
        "source",
        100,
    ),
    "kit 1500/class, random photos, top 20% columns, C x10": (
        1500,
        "photos random",
        0.2,
        True,
        True,
        1,
        10,
    ),
    # round 5: every photo, fewer columns
    "kit all photos, top 9% columns": (4000, "photos random", 0.09, True, True, 1),
    "kit all photos, top 5% columns, new as a source": (
        4000,
        "photos random",
        0.05,
        True,
        True,
        "source",
    ),
    "kit all photos, top 3% columns, new as a source": (
        4000,
        "photos random",
        0.03,
        True,
        True,
        "source",
    ),
}


def cmd_designs(args) -> None:
    """Each kit design against a refit on every training row (the features-file update), per
    held-out generator with k new faces: caught, false alarms, the other generators."""
    from fakespotter.updatekit import quantize

    study = Study()
    det = study.det
    results = []
    designs = {k: v for k, v in DESIGNS.items() if not args.only or k in args.only}
    for g in GENERATORS:
        for draw in range(args.draws):
            pool = study.pool(g, 400, seed=100 + draw)
            new = np.sort(np.random.default_rng(draw).choice(pool, args.k, replace=False))
            base = study.train_rows(without=g)
            E = study.E
            # the reference: every stored row (float, all columns) + the new faces
            references = (
                ("all training rows (features file)", np.zeros(0, int), 1),
                ("all training rows (features file)", new, 1),
                ("all training rows, new as a source", new, "source"),
            )
            for ref_name, extra, how in references:
                if args.no_reference or (args.reference and ref_name not in args.reference):
                    continue
                S = np.r_[base, extra]
                w_new = (
                    source_weight(study.y_train[base], study.names[base], len(extra))
                    if how == "source"
                    else 1.0
                )
                w = np.r_[np.ones(len(base)), np.full(len(extra), w_new)]
                start = time.perf_counter()
                dec = study.fit(S, w, study.G[np.ix_(S, S)], study.G[np.ix_(E, S)])
                r = {
                    "design": ref_name,
                    "held_out": g,
                    "k": len(extra),
                    "draw": draw,
                    "rows": len(base),
                    "mb": None,
                    "seconds": time.perf_counter() - start,
                    **study.measure(dec),
                }
                results.append(r)
                print(json.dumps(r), flush=True)
            for name, (
                per_class,
                how,
                share,
                eight_bit,
                weighted,
                new_how,
                *c_times,
            ) in designs.items():
                start = time.perf_counter()
                rows, weight = kit_rows(study, base, per_class, how, seed=draw)
                cols = np.arange(len(det.coef_)) if share >= 1 else top_columns(det, share)
                A = study.Z[np.ix_(rows, cols)]
                if eight_bit:  # the kit stores counts; quantize those, standardize again
                    raw = (
                        A * det.classifier_.scaler_scale_[cols] + det.classifier_.scaler_mean_[cols]
                    )
                    codes, low, step = quantize(raw)
                    A = (
                        (low + step * codes - det.classifier_.scaler_mean_[cols])
                        / det.classifier_.scaler_scale_[cols]
                    ).astype(np.float32)
                N = study.Z[np.ix_(new, cols)]
                S_feat = np.concatenate([A, N])
                K_SS = gram(S_feat, S_feat)
                K_ES = gram(study.Z[np.ix_(E, cols)], S_feat)
                stored_w = weight if weighted else np.ones(len(rows))
                w_new = 1.0
                if new_how == "source":  # total weight of an average stored fake source
                    fake = study.y_train[rows] == 1
                    per_source = [
                        stored_w[fake & (study.names[rows] == n)].sum()
                        for n in set(study.names[rows][fake])
                    ]
                    w_new = float(np.mean(per_source)) / len(new)
                w = np.r_[stored_w, np.full(len(new), w_new)]
                dec = study.fit(
                    np.r_[rows, new], w, K_SS, K_ES, C_times=c_times[0] if c_times else 1
                )
                r = {
                    "design": name,
                    "held_out": g,
                    "k": args.k,
                    "draw": draw,
                    "rows": len(rows),
                    "mb": len(rows) * len(cols) * (1 if eight_bit else 4) / 1e6,
                    "seconds": time.perf_counter() - start,
                    **study.measure(dec),
                }
                results.append(r)
                print(json.dumps(r), flush=True)
            write(f"designs{args.tag}", results)
    summarize_designs(results)


def source_weight(y: np.ndarray, names: np.ndarray, k: int) -> float:
    """Each of k new fakes' weight for the new source to weigh as an average fake source."""
    fakes = names[y == 1]
    return float(np.mean([np.sum(fakes == n) for n in set(fakes)])) / max(k, 1)


def summarize_designs(results: list[dict]) -> None:
    by: dict = {}
    for r in results:
        by.setdefault((r["design"], r["k"]), []).append(r)
    keys = [
        "new",
        "others",
        "test-real_called_fake",
        "wild-second_called_fake",
        "studio-second_called_fake",
    ]
    print(
        "| design | k | MB | caught new | other generators caught | test reals called fake "
        "| wild 2nd half | studio 2nd half |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (design, k), rs in by.items():
        vals = {key: [] for key in keys}
        for r in rs:
            vals["new"].append(r[f"caught_{r['held_out']}"])
            vals["others"] += [r[f"caught_{g}"] for g in GENERATORS if g != r["held_out"]]
            for key in keys[2:]:
                vals[key].append(r[key])
        mb = rs[0]["mb"]
        print(
            f"| {design} | {k} | {'' if mb is None else f'{mb:.1f}'} | "
            + " | ".join(pct(np.mean(vals[key])) for key in keys)
            + " |"
        )


# -- item 1: the chosen kit, the shipped files ------------------------------------------------

# the design the `designs` table picks (docs/teaching.md says why)
KIT_DESIGN = {"per_class": 3300, "how": "photos random", "share": 0.09}
SHIP = OUT / "ship"  # default.safetensors + default.kit.safetensors: copy both into data/
SOURCE_FOLDERS = {  # where each training source's photos are, as a user of the repo sees it
    "real:ffhq": "../shared/faces/train/real",
    "real:utk": "../shared/faces/wild/real (first half)",
    "real:ciplab": "../shared/faces/studio/real (first half)",
    **{g: f"../shared/faces/train/fake ({g}-*)" for g in GENERATORS},
}


def all_training_rows():
    from fakespotter.persistence import load_model

    det = load_model(CANDIDATE)
    rows, names = training_rows(det)
    return det, rows, names


def make_kit(
    det,
    rows,
    names,
    keep: np.ndarray | None = None,
    design: dict | None = None,
    without: str | None = None,
):
    """``updatekit.build_kit`` of the rows ``keep`` (all by default) by ``design``, with the
    model's val photos as the kit's held-out photos (``without`` a generator's)."""
    from fakespotter.trainingset import TrainingFeatures
    from fakespotter.updatekit import build_kit

    design = design or KIT_DESIGN
    if keep is None:
        keep = np.arange(len(rows))
    if "photos" in design["how"]:  # the photos' rows, not their augmented copies
        keep = keep[rows.groups[keep] == keep]
    sub = TrainingFeatures(
        rows.features[keep], rows.y[keep], rows.groups[keep], rows.source[keep], rows.sources
    )
    Z = standardized(det, sub.features)
    margin = np.where(sub.y == 1, 1, -1) * (
        Z @ det.coef_.astype(np.float32) + det.classifier_.intercept_
    )
    del Z
    columns = None if design["share"] >= 1 else top_columns(det, design["share"])
    return build_kit(
        det,
        sub,
        per_class=design["per_class"],
        columns=columns,
        margin=margin if "margin" in design["how"] else None,
        row_sources=[str(n) for n in names[keep]],
        val=val_rows(without),
        info={
            "design": design,
            "built_by": "python -m benchmarks.teach build-kit",
            "val": "../shared/faces/val/real + val/fake",
        },
    )


def val_rows(without: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The candidate's features of val/real and val/fake (``without`` a generator's)."""
    ev = load_eval(str(CANDIDATE), ["val-real", "val-fake"])
    fake = ev["val-fake"]
    keep = fake["short"] != without
    return (
        np.concatenate([ev["val-real"]["features"], fake["features"][keep]]),
        np.r_[ev["val-real"]["y"], fake["y"][keep]],
    )


def cmd_build_kit(args) -> None:
    """The candidate to ship: the trained model with its novelty signal fitted on real faces
    only (item 4), and its kit beside it."""
    from fakespotter.modelfile import model_id
    from fakespotter.persistence import save_model
    from fakespotter.updatekit import fit_real_novelty, load_kit, save_kit

    det, rows, names = all_training_rows()
    SHIP.mkdir(parents=True, exist_ok=True)
    model = SHIP / "default.safetensors"
    if args.real_novelty:
        real = np.flatnonzero((rows.y == 0) & (rows.groups == np.arange(len(rows))))
        sources = sorted(set(names[real]))
        fit_real_novelty(
            det, rows.features[real], np.array([sources.index(n) for n in names[real]])
        )
        print(f"novelty limit {det.novelty_threshold_:.3f} ({det.novelty_.info_['chosen_on']})")
    training = dict(det.training_)
    # the command as benchmarks/train_default.py ran it (the CLI recorded --augment's value
    # as a Python tuple, "('simple',)")
    training["command"] = training["command"].replace(
        "--augment '('\"'\"'simple'\"'\"',)'", "--augment simple"
    )
    # the sources as the kit knows them (train took one real folder and symlink folders):
    # `info` and a later `update --real ffhq=...` name the same ones
    photo = rows.groups == np.arange(len(rows))
    for kind, y in (("real", 0), ("fake", 1)):
        found, sizes = np.unique(names[photo & (rows.y == y)], return_counts=True)
        counts = dict(zip(found, sizes, strict=True))
        training[f"{kind}_sources"] = {
            str(n).removeprefix("real:"): {"folder": SOURCE_FOLDERS[n], "n_faces": int(c)}
            for n, c in sorted(counts.items())
        }
        training[kind] = ", ".join(s["folder"] for s in training[f"{kind}_sources"].values())
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges

    if LAYER_DECISION_KEY not in training:  # trained before train stored them: the web page's
        # per-layer chart draws a face against these spreads of the training rows
        training[LAYER_DECISION_KEY] = decision_ranges(det, rows.features, rows.y)
    training["then"] = (
        "python -m benchmarks.teach build-kit"
        + (
            " --real-novelty: novelty refitted on the real training faces only;"
            if args.real_novelty
            else ":"
        )
        + " update kit written beside the model"
    )
    save_model(det, model, training)
    kit = make_kit(det, rows, names)
    kit.info["model_id"] = model_id(model)
    if args.curve:  # what `fakespotter info` says an update learns
        kit.info["measured"] = curve_summary(json.loads(args.curve.read_text()), k=100)
    path = SHIP / "default.kit.safetensors"
    save_kit(path, kit)
    load_kit(path, det)  # it reads back and belongs to the model
    print(
        f"wrote {model} ({model.stat().st_size / 1e6:.1f} MB) and {path} "
        f"({path.stat().st_size / 1e6:.1f} MB): {len(kit)} rows x {len(kit.columns)} columns, "
        f"rows by source {kit.info['rows_by_source_kit']}"
    )


def curve_summary(results: list[dict], k: int) -> dict:
    """Means over draws at ``k`` new faces, per held-out generator: its test faces caught,
    the most real photos of one source called fake, the other generators' change."""
    before = {r["held_out"]: r for r in results if r["k"] == 0}
    out = {}
    for g in sorted({r["held_out"] for r in results if r["k"] == k}):
        at = [r for r in results if r["held_out"] == g and r["k"] == k]
        real = ("test_real_called_fake", "wild-second_called_fake", "studio-second_called_fake")
        out[g] = {
            "caught": float(np.mean([r["caught_new"] for r in at])),
            "real_called_fake_at_most": float(max(np.mean([r[m] for r in at]) for m in real)),
            "others_change": float(np.mean([r["others"] for r in at]) - before[g]["others"]),
        }
    return {
        "k": k,
        "by_held_out_generator": out,
        "how": "python -m benchmarks.teach curve (means of its draws); docs/teaching.md",
        "scope": "StyleGAN-family generators only: no other family was measured",
    }


# -- item 4: novelty -------------------------------------------------------------------------


def novelty_table(det, ev: dict, names_to_sets: dict, threshold=None) -> dict:
    """Share flagged per set, and the classifier's error on flagged vs unflagged faces."""
    limit = det.novelty_threshold_ if threshold is None else threshold
    out, err_flagged, err_plain = {}, [], []
    for label, (name, mask_short) in names_to_sets.items():
        d = ev[name]
        keep = np.ones(len(d["features"]), bool) if mask_short is None else d["short"] == mask_short
        F = d["features"][keep]
        flagged = det.novelty(F) > limit
        wrong = (det.predict_proba(features=F)[:, 1] >= det.threshold_) != (d["y"][keep] == 1)
        out[label] = {"n": int(len(F)), "flagged": float(flagged.mean())}
        err_flagged += list(wrong[flagged])
        err_plain += list(wrong[~flagged])
    out["error_flagged"] = (float(np.mean(err_flagged)) if err_flagged else None, len(err_flagged))
    out["error_unflagged"] = (float(np.mean(err_plain)) if err_plain else None, len(err_plain))
    return out


SETS = {
    "val FFHQ": ("val-real", None),
    "test FFHQ": ("test-real", None),
    "wild 2nd half (UTKFace)": ("wild-second", None),
    "studio 2nd half (CIPLAB)": ("studio-second", None),
    "test sg1": ("test-fake", "sg1"),
    "test sgx": ("test-fake", "sgx"),
    "test tpdne": ("test-fake", "tpdne"),
}


def cmd_novelty(args) -> None:
    import copy

    from fakespotter.persistence import load_model
    from fakespotter.training import novelty_threshold
    from fakespotter.updatekit import fit_real_novelty

    results = {}
    shipped = load_model(SHIPPED)
    ev_s = load_eval("default")
    results["shipped: FFHQ + StyleGAN fakes, limit on val"] = novelty_table(
        shipped,
        ev_s,
        {
            **SETS,
            "all of wild (UTKFace)": ("wild-first", None),
            "all of studio (CIPLAB)": ("studio-first", None),
        },
    )
    det, rows, names = all_training_rows()
    ev = load_eval(str(CANDIDATE))
    photos = rows.groups == np.arange(len(rows))
    results["candidate as trained: 3 real sources + fakes, limit on val"] = novelty_table(
        det, ev, SETS
    )
    # leave one generator out of the reference (the limit again on val reals)
    logo = {}
    for g in GENERATORS:
        d = copy.deepcopy(det)
        d.fit_novelty(rows.features[photos & (names != g)])
        limit = novelty_threshold(d.novelty(ev["val-real"]["features"]))
        logo[g] = novelty_table(d, ev, {f"test {g}": ("test-fake", g)}, limit)[f"test {g}"]
    results["candidate as trained: 3 real sources + fakes, limit on val"][
        "leave one generator out"
    ] = logo
    real = np.flatnonzero(photos & (rows.y == 0))
    sources = sorted(set(names[real]))
    src = np.array([sources.index(n) for n in names[real]])
    d = copy.deepcopy(det)
    fit_real_novelty(d, rows.features[real], src)
    results["candidate, reference = real faces only, limit per source held out"] = novelty_table(
        d, ev, SETS
    )
    d2 = copy.deepcopy(d)
    limit = novelty_threshold(d2.novelty(ev["val-real"]["features"]))
    results["candidate, reference = real faces only, limit on val"] = novelty_table(
        d2, ev, SETS, limit
    )
    # leave one real source out of the reference: flagged on all of that source's photos
    loso = {}
    for left, second in (("real:ciplab", "studio-second"), ("real:utk", "wild-second")):
        keep = names[real] != left
        d3 = copy.deepcopy(det)
        fit_real_novelty(d3, rows.features[real[keep]], src[keep])
        F = np.concatenate([rows.features[real[~keep]], ev[second]["features"]])
        loso[left] = {
            "n": len(F),
            "flagged": float(np.mean(d3.novelty(F) > d3.novelty_threshold_)),
            "limit": d3.novelty_threshold_,
        }
    results["candidate, reference = real faces only, limit per source held out"][
        "leave one real source out"
    ] = loso
    # an update keeps the model's novelty signal (updatekit.update_with_kit); refitting it on
    # the kit's real faces alone, as a first design did, flags far too many real photos
    from fakespotter.updatekit import UpdateKit

    kit: UpdateKit = make_kit(det, rows, names)
    d4 = copy.deepcopy(det)
    kit_real = np.flatnonzero((kit.y == 0) & (np.r_[True, np.diff(kit.groups) != 0]))
    wide = np.zeros((len(kit_real), rows.features.shape[1]), np.float32)
    wide[:, kit.columns] = kit.features()[kit_real]  # the kit's columns; the rest at 0
    if len(kit.columns) == rows.features.shape[1]:
        fit_real_novelty(d4, wide, kit.source[kit_real])
        results["refitted on the kit's real faces (not shipped)"] = novelty_table(d4, ev, SETS)
    write("novelty", results)
    cols = [*SETS, "all of wild (UTKFace)", "all of studio (CIPLAB)"]
    print("| reference | " + " | ".join(cols) + " | error flagged | error unflagged |")
    print("|---|" + "---|" * (len(cols) + 2))
    for name, r in results.items():
        cells = [pct(r[c]["flagged"]) if c in r else "" for c in cols]
        ef, eu = r["error_flagged"], r["error_unflagged"]
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {pct(ef[0])} of {ef[1]} | {pct(eu[0])} of {eu[1]} |"
        )
    print(
        json.dumps(
            {
                k: v.get("leave one generator out") or v.get("leave one real source out")
                for k, v in results.items()
            },
            indent=1,
        )
    )


# -- item 5: the learning curve through the product's path -------------------------------------


CURVE_KEYS = (
    "caught_new",
    "others",
    "test_real_called_fake",
    "wild-second_called_fake",
    "studio-second_called_fake",
)


def cmd_curve(args) -> None:
    from fakespotter.persistence import load_model
    from fakespotter.trainingset import TrainingFeatures
    from fakespotter.updatekit import update_with_kit

    det0, rows, names = all_training_rows()
    model = SHIP / "default.safetensors" if (SHIP / "default.safetensors").exists() else CANDIDATE
    ev = load_eval(str(CANDIDATE))
    photos = rows.groups == np.arange(len(rows))
    results = []
    if not args.generator:  # the update's starting point: the whole kit, nothing new
        det = load_model(model)
        info = update_with_kit(
            det,
            make_kit(det0, rows, names),
            TrainingFeatures(
                rows.features[:0], np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), ["none"]
            ),
        )
        m = measure_model(det, ev)
        results.append(
            {
                "held_out": "none",
                "k": 0,
                "draw": 0,
                "seconds": info["seconds"],
                **m,
                "caught_new": None,
                "others": float(np.mean([m[f"caught_{o}"] for o in GENERATORS])),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    for g in args.generator or GENERATORS:
        kit = make_kit(det0, rows, names, keep=np.flatnonzero(names != g), without=g)
        pool = np.flatnonzero(photos & (names == g))
        for k in args.k or KS:
            for draw in range(args.draws if k else 1):
                new_idx = np.sort(np.random.default_rng(1000 + draw).choice(pool, k, replace=False))
                new = TrainingFeatures(
                    rows.features[new_idx], np.ones(k, int), np.arange(k), np.zeros(k, int), [g]
                )
                det = load_model(model)
                weight = args.new_weight if args.new_weight == "source" else float(args.new_weight)
                info = update_with_kit(det, kit, new, new_weight=weight)
                m = measure_model(det, ev)
                at_val = measure_model(det, ev, val_point(det, ev))  # as train would choose it
                m.update({f"val_point_{key}": v for key, v in at_val.items()})
                r = {
                    "held_out": g,
                    "k": k,
                    "draw": draw,
                    "new_weight": args.new_weight,
                    "seconds": info["seconds"],
                    **m,
                    "caught_new": m[f"caught_{g}"],
                    "others": float(np.mean([m[f"caught_{o}"] for o in GENERATORS if o != g])),
                }
                results.append(r)
                print(json.dumps(r), flush=True)
                write(f"curve-{args.new_weight}", results)
    print(
        "| new generator | k | caught (its test faces) | other generators caught "
        "| test reals called fake | wild 2nd half called fake | studio 2nd half called fake "
        "| refit s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by: dict = {}
    for r in results:
        by.setdefault((r["held_out"], r["k"]), []).append(r)
    for (g, k), rs in by.items():
        if g == "none":
            r = rs[0]
            print(
                "| (none: all three in the kit) | 0 | – | "
                + " | ".join(pct(r[key]) for key in CURVE_KEYS[1:])
                + f" | {r['seconds']:.0f} |"
            )
            continue
        mean = {
            key: float(np.mean([r[key] for r in rs]))
            for key in (
                "caught_new",
                "others",
                "test_real_called_fake",
                "wild-second_called_fake",
                "studio-second_called_fake",
                "seconds",
            )
        }
        print(
            f"| {g} | {k} | "
            + " | ".join(pct(mean[key]) for key in CURVE_KEYS)
            + f" | {mean['seconds']:.0f} |"
        )


def cmd_time_update(args) -> None:
    """`update` with 100 new faces from files, end to end as the CLI will run it (load model
    and kit, find and count the faces, refit, write the model), in a child process: seconds
    and peak memory."""
    import subprocess

    code = f"""
import resource, sys, time
t0 = time.perf_counter()
import numpy as np
from pathlib import Path
from fakespotter.persistence import load_model, save_model
from fakespotter.photos import default_workers
from fakespotter.training import largest_faces
from fakespotter.trainingset import TrainingFeatures
from fakespotter.updatekit import load_kit, update_with_kit
det = load_model({str(SHIP / "default.safetensors")!r})
kit = load_kit({str(SHIP / "default.kit.safetensors")!r}, det)
t1 = time.perf_counter()
files = sorted(Path({str(OUT / ("train-fake-" + args.generator))!r}).iterdir())[:{args.n}]
faces = largest_faces(det.face_cropper(), files, workers=default_workers(len(files)))
F = det.transform(faces.crops)
t2 = time.perf_counter()
n = len(F)
new = TrainingFeatures(F, np.ones(n, int), np.arange(n), np.zeros(n, int), ["new"])
info = update_with_kit(det, kit, new)
save_model(det, {str(OUT / "m2.safetensors")!r}, det.training_)
t3 = time.perf_counter()
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{{n}} faces: start-up + load model and kit {{t1 - t0:.1f}} s, "
      f"find + count faces {{t2 - t1:.1f}} s, refit + write {{t3 - t2:.1f}} s, "
      f"total {{t3 - t0:.1f}} s; peak memory {{own:.0f}} MB "
      f"(+ face-finding workers {{kids:.0f}} MB)")
"""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    print(f"wall {time.perf_counter() - start:.1f} s (python start-up and imports included)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("folders")
    p = sub.add_parser("features")
    p.add_argument("--model", action="append", default=[], help="'default' or a model file")
    p.add_argument("--only", action="append", default=[], help="these measured folders only")
    sub.add_parser("compare")
    p = sub.add_parser("designs")
    p.add_argument("--k", type=int, default=100, help="new faces of the held-out generator")
    p.add_argument("--draws", type=int, default=1)
    p.add_argument("--only", action="append", default=[], help="these designs only")
    p.add_argument("--no-reference", action="store_true", help="skip the all-rows refits")
    p.add_argument("--reference", action="append", default=[], help="these all-rows refits only")
    p.add_argument("--tag", default="", help="results go to out/teach/designs{tag}.json")
    p = sub.add_parser("build-kit")
    p.add_argument("--real-novelty", action="store_true", help="refit novelty on reals only")
    p.add_argument(
        "--curve", type=Path, help="a `curve` result (JSON): its k = 100 means go into the kit"
    )
    sub.add_parser("novelty")
    p = sub.add_parser("curve")
    p.add_argument("--generator", action="append", default=[])
    p.add_argument("--k", type=int, action="append", default=[])
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--new-weight", default="source", help="a number, or 'source' [%(default)s]")
    p = sub.add_parser("time-update")
    p.add_argument("--generator", default="sgx")
    p.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    stages = {
        "build-kit": cmd_build_kit,
        "novelty": cmd_novelty,
        "curve": cmd_curve,
        "time-update": cmd_time_update,
        "folders": cmd_folders,
        "features": cmd_features,
        "compare": cmd_compare,
        "designs": cmd_designs,
    }
    stages[args.stage](args)


if __name__ == "__main__":
    main()

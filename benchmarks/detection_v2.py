"""Detection v2: every idea of issue #13, measured the same way against the paper's row.

    python -m benchmarks.detection_v2 [--limit N] [--markdown docs/detection_v2.md]
    python -m benchmarks.detection_v2 --match pipeline    # only these ideas; the rest kept
    python -m benchmarks.detection_v2 --results-doc   # the same, as docs/results.md's section

Each idea changes one thing of today's recipe (SFace channel counts, one augmented copy per
training photo, linear SVM with C by cross-validation, Platt calibration):

* richer counts: log counts; k-multisection (counts above m + z s, z = -1, 0, 1, 2) per layer
  and per channel (44,288 SFace features, extracted streaming and stored as uint16), and the
  channel counts with the per-layer levels beside them;
* several networks: SFace + FaceNet and SFace + dlib channel counts, concatenated (one
  classifier on both, as `--backbone sface+facenet` would ship);
* context: FaceNet on the aligned face with 1.4x the margin at 224 px (the same pixels per
  face as its tight 160 px crop: context at a higher resolution, as the SFace trial at 112 px
  asked for), alone and as a second view beside the tight crop; these rows train without
  augmented copies and stand beside FaceNet's tight row trained the same way;
* classifiers: logistic regression, an RBF SVM (Nystroem features), gradient boosting;
* test-time mirrored faces, and mirrored copies in training.

Every row is measured the same way:

* val: AUC and Brier score (calibration); choice among ideas is by val AUC only
  (benchmarks/train_default.py states the rule);
* test: AUC, accuracy at 0.5, and at the operating point chosen on val (at most 1% of val
  reals called fake) the share of fakes caught and of reals kept; wild/real called fake there;
* leave-one-generator-out as docs/results.md's table: trained on real + StyleGAN1 only, the
  worst AUC over the other generators' test faces and the share of them caught at that
  model's own val-chosen point (val reals + StyleGAN1 val fakes);
* perturbed test copies (jpeg:50, blur:1, noise:5, resize:0.5; thresholds of the clean train
  split, as deployed): the largest AUC drop and caught/kept drop against clean test;
* ms/face: feature extraction per face, measured here on the clean pass of each network
  (seconds / faces, same machine, same batches); a mirror doubles it.

Stages are reproduce.py's (MTCNN landmarks, aligned crops, counts), cached under
out/detection_v2/<run>/; each idea's result is cached there too, so an interrupted run
resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import reproduce
from fakespotter.backbones import get_backbone
from fakespotter.coverage import NeuronCoverage, counts_per_layer
from fakespotter.criteria import get_criterion
from fakespotter.detector import FakeSpotter
from fakespotter.evaluation.perturb import (
    PipelineAugmentation,
    parse_perturbations,
)
from fakespotter.faces import warp_face
from fakespotter.metrics import evaluate_scores
from fakespotter.operating_point import choose_operating_point
from fakespotter.taps import find_taps
from fakespotter.training import scores_with_missing

PERTURBATIONS = "jpeg:50,blur:1,noise:5,resize:0.5"
WIDE_SCALE, WIDE_SIZE = 1.4, 224  # FaceNet: 160 px * 1.4 = 224, the tight crop's pixels per face
KMC = get_criterion("kmultisection-channel")  # the registered one, which the CLI trains
PIPELINE_SEED = 3  # the photo-pipeline copy of image i: PipelineAugmentation(3, i)
Predict = Callable[[np.ndarray], np.ndarray]  # features -> P(fake)
# the sources Parts.build can add to SFace's channel counts (and the augmented copies)
ALL_SOURCES = frozenset(
    {"facenet", "dlib", "mirror_sface", "kmc", "stats", "facenet_wide", "pipeline"}
)
RECORD = reproduce.ROOT / "docs" / "detection_v2.json"  # every row measured on the full set


def as_counts(F: np.ndarray) -> np.ndarray:
    """Counts as uint16 (exact: no tap has 65,536 positions), half the memory of float32."""
    assert F.max(initial=0) < 2**16
    return F.astype(np.uint16)


def wide_template(bb, scale: float, size: int) -> np.ndarray:
    """``bb``'s template with ``scale`` x the margin, in a size x size crop."""
    t = np.asarray(bb.alignment_template, dtype=np.float64)
    half = bb.input_size / 2
    return (t - half) * (size / bb.input_size) / scale + size / 2


class Extractor:
    """Counts of one network (criterion, crop) with thresholds fit on the train crops."""

    def __init__(self, name: str, criterion="channel", scale: float = 1.0, size=None) -> None:
        self.bb = get_backbone(name).load()
        self.size = size or self.bb.input_size
        self.template = (
            wide_template(self.bb, scale, self.size) if scale != 1.0 else self.bb.alignment_template
        )
        taps = (
            self.bb.taps()
            if self.size == self.bb.input_size
            else find_taps(self.bb.model, (3, self.size, self.size))
        )
        self.coverage = NeuronCoverage(self.bb.model, taps, criterion, "raw", self.bb.activations)
        self.seconds = 0.0
        self.faces = 0

    def crops(self, rows, landmarks, image_of) -> np.ndarray:
        crops = np.zeros((len(rows), self.size, self.size, 3), np.uint8)
        for i in tqdm(np.flatnonzero(~np.isnan(landmarks[:, 0, 0])), desc="align", unit="img"):
            crops[i] = warp_face(image_of(i), landmarks[i], self.template, self.size)
        return crops

    def fit(self, crops: np.ndarray, batch: int = 32) -> None:
        self.coverage.fit(
            self.bb.preprocess(crops[i : i + batch])
            for i in tqdm(range(0, len(crops), batch), desc="thresholds")
        )

    def counts(self, crops: np.ndarray, desc: str, batch: int = 32) -> np.ndarray:
        out = []
        start = time.perf_counter()
        for i in tqdm(range(0, len(crops), batch), desc=desc):
            out.append(as_counts(self.coverage.transform(self.bb.preprocess(crops[i : i + batch]))))
        self.seconds += time.perf_counter() - start
        self.faces += len(crops)
        return np.concatenate(out)


def channel_statistics(crops: np.ndarray, desc: str, batch: int = 32) -> tuple[np.ndarray, float]:
    """SFace per-channel statistics of every tap's raw output: the mean and the standard
    deviation over a conv channel's positions (a linear layer's outputs once, as they are);
    float32, N x (2 x conv channels + linear outputs). Also ms/face."""
    import torch

    from fakespotter.taps import forward_hooks

    bb = get_backbone("sface").load()
    modules = dict(bb.model.named_modules())
    found: list = []

    def hook(tap):
        def run(module, inputs, out):
            if tap.kind == "conv":
                flat = out.flatten(2)
                found.append(torch.cat([flat.mean(2), flat.std(2, unbiased=False)], dim=1))
            else:
                found.append(out.reshape(len(out), -1))

        return run

    hooks = {modules[t.name]: hook(t) for t in bb.taps()}
    out, start = [], time.perf_counter()
    with forward_hooks(hooks), torch.inference_mode():
        for i in tqdm(range(0, len(crops), batch), desc=desc):
            found.clear()
            bb.model.eval()(bb.preprocess(crops[i : i + batch]))
            out.append(torch.cat(found, dim=1).float().numpy())
    return np.concatenate(out), 1000 * (time.perf_counter() - start) / max(len(crops), 1)


def mirrored_features(crops: np.ndarray, thresholds, desc: str) -> np.ndarray:
    """Channel counts of the left-right mirrored crops, with the clean thresholds."""
    bb = get_backbone("sface").load()
    coverage = NeuronCoverage(
        bb.model, bb.taps(), "channel", "raw", bb.activations, thresholds=thresholds
    )
    return reproduce.extract(coverage, bb, np.ascontiguousarray(crops[:, :, ::-1]), desc)["channel"]


class Parts:
    """Every source's features for every part of the study.

    Parts: ``clean`` (every row), ``aug`` (one augmented copy of each train row),
    ``pipeline`` (one photo-pipeline copy of each train row; SFace sources only) and
    ``perturbed:<p>`` (each test row perturbed). Sources: ``sface``, ``facenet``, ``dlib``
    (channel counts), ``mirror_sface`` (SFace, mirrored face; not in ``aug``), ``kmc`` (SFace
    k-multisection per channel), ``facenet_wide`` (FaceNet channel counts of the wide crop;
    not in ``aug``).
    """

    def __init__(self, rows, limit) -> None:
        self.out = reproduce.ROOT / "out" / "detection_v2" / (f"limit{limit}" if limit else "full")
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows = rows
        self.split = np.array([r["split"] for r in rows])
        self.train_idx = np.flatnonzero(self.split == "train")
        self.test_idx = np.flatnonzero(self.split == "test")
        self.perturbations = parse_perturbations(PERTURBATIONS)
        self.data: dict[str, dict[str, np.ndarray]] = {}
        self.found: dict[str, np.ndarray] = {}
        self.ms_per_face: dict[str, float] = {}

    def build(self, needs: set[str] = ALL_SOURCES) -> Parts:
        """Build the sources in ``needs`` (see ``needs_of``); SFace's channel counts always."""
        rows, out = self.rows, self.out
        landmarks = reproduce.stage_landmarks(rows, out / "landmarks.npz")
        clean = {}
        for name in ("sface", *[n for n in ("facenet", "dlib") if n in needs]):
            clean[name] = reproduce.stage_features(
                rows, landmarks, name, out / f"features_{name}.npz"
            )
            self.ms_per_face[name] = 1000 * float(clean[name]["extract_seconds"]) / len(rows)
        have = clean["sface"]["have"].astype(bool)
        self.found["clean"] = have
        self.data["clean"] = {n: as_counts(clean[n]["channel"]) for n in clean}
        aug = reproduce.stage_altered(
            rows, self.train_idx, reproduce.augmented_image_of(rows), "augment", out,
            list(clean), clean,
        )  # fmt: skip
        self.data["aug"] = {n: as_counts(aug[n]["channel"]) for n in aug}
        self.found["aug"] = aug["sface"]["have"].astype(bool)
        self.data["pipeline"], self.found["pipeline"] = {}, np.zeros(0, bool)
        if "pipeline" in needs:
            self._pipeline(clean)
        altered = {}
        for p in self.perturbations:
            feats = reproduce.stage_altered(
                rows, self.test_idx, reproduce.perturbed_image_of(rows, p), p.name, out,
                list(clean), clean,
            )  # fmt: skip
            key = f"perturbed:{p.name}"
            self.data[key] = {n: as_counts(feats[n]["channel"]) for n in feats}
            self.found[key] = feats["sface"]["have"].astype(bool)
            altered[key] = out / "altered" / p.name.replace(":", "_")
        for source, build in (
            ("mirror_sface", self._mirror),
            ("kmc", self._kmc),
            ("stats", self._stats),
            ("facenet_wide", self._wide),
        ):
            if source in needs:
                build(landmarks, altered, clean, needs)
        (out / "ms_per_face.json").write_text(json.dumps(self.ms_per_face, indent=2))
        return self

    def _pipeline(self, clean) -> None:
        rows = self.rows
        pipeline = reproduce.stage_altered(
            rows, self.train_idx, lambda i: PipelineAugmentation(PIPELINE_SEED, i)(
                reproduce.load_image(reproduce.FACES / rows[i]["file"])),
            "pipeline", self.out, ["sface"], clean,
        )  # fmt: skip
        self.data["pipeline"] = {"sface": as_counts(pipeline["sface"]["channel"])}
        self.found["pipeline"] = pipeline["sface"]["have"].astype(bool)

    def _mirror(self, landmarks, altered, clean, needs) -> None:
        thresholds = clean["sface"]["thresholds"]
        path = self.out / "mirrored_sface.npy"
        if not path.exists():
            crops = reproduce.stage_sface_crops(self.rows, landmarks, self.out)
            np.save(path, as_counts(mirrored_features(crops, thresholds, "coverage mirrored")))
        self.data["clean"]["mirror_sface"] = np.load(path)
        for key, folder in altered.items():
            m_path = folder / "mirrored_sface.npy"
            if not m_path.exists():
                crops = np.load(folder / "crops_sface.npy")
                np.save(m_path, as_counts(mirrored_features(crops, thresholds, f"mirrored {key}")))
            self.data[key]["mirror_sface"] = np.load(m_path)

    def _take(self, path: Path, source: str) -> None:
        """A cached source (one array a part, and ``ms_per_face``) into ``data``."""
        cached = np.load(path)
        self.ms_per_face[source] = float(cached["ms_per_face"])
        for key in cached.files:
            if key != "ms_per_face":
                self.data[key][source] = cached[key]

    def _kmc(self, landmarks, altered, clean, needs) -> None:
        """SFace k-multisection per channel, from the SFace crops the stages cached."""
        path = self.out / "kmc_sface.npz"
        if not path.exists():
            ex = Extractor("sface", KMC)
            crops = reproduce.stage_sface_crops(self.rows, landmarks, self.out)
            have = ~np.isnan(landmarks[:, 0, 0])
            ex.fit(crops[np.flatnonzero((self.split == "train") & have)])
            result = {"clean": ex.counts(crops, "k-multisection per channel")}
            ms = 1000 * ex.seconds / ex.faces
            del crops
            for key, folder in {"aug": self.out / "altered" / "augment", **altered}.items():
                result[key] = ex.counts(np.load(folder / "crops_sface.npy"), f"kmc {key}")
            np.savez(path, ms_per_face=ms, **result)
        self._take(path, "kmc")
        if "pipeline" not in needs:
            return
        path = self.out / "kmc_sface_pipeline.npz"
        if not path.exists():  # the same thresholds (train crops), on the photo-pipeline copies
            ex = Extractor("sface", KMC)
            crops = reproduce.stage_sface_crops(self.rows, landmarks, self.out)
            have = ~np.isnan(landmarks[:, 0, 0])
            ex.fit(crops[np.flatnonzero((self.split == "train") & have)])
            del crops
            crops = np.load(self.out / "altered" / "pipeline" / "crops_sface.npy")
            np.savez(path, pipeline=ex.counts(crops, "kmc pipeline"))
        self.data["pipeline"]["kmc"] = np.load(path)["pipeline"]

    def _stats(self, landmarks, altered, clean, needs) -> None:
        """SFace per-channel statistics, from the SFace crops the stages cached."""
        path = self.out / "stats_sface.npz"
        if not path.exists():
            crops = reproduce.stage_sface_crops(self.rows, landmarks, self.out)
            clean, ms = channel_statistics(crops, "per-channel statistics")
            result = {"clean": clean}
            del crops
            for key, folder in {"aug": self.out / "altered" / "augment", **altered}.items():
                crops = np.load(folder / "crops_sface.npy")
                result[key] = channel_statistics(crops, f"statistics {key}")[0]
            np.savez(path, ms_per_face=ms, **result)
        self._take(path, "stats")

    def _wide(self, landmarks, altered, clean, needs) -> None:
        """FaceNet counts of the wide crop: clean and perturbed test copies."""
        path = self.out / "facenet_wide.npz"
        if not path.exists():
            ex = Extractor("facenet", "channel", WIDE_SCALE, WIDE_SIZE)
            crops = ex.crops(self.rows, landmarks, lambda i: reproduce.load_image(
                reproduce.FACES / self.rows[i]["file"]))  # fmt: skip
            have = ~np.isnan(landmarks[:, 0, 0])
            ex.fit(crops[np.flatnonzero((self.split == "train") & have)])
            result = {"clean": ex.counts(crops, "facenet wide")}
            ms = 1000 * ex.seconds / ex.faces
            del crops
            for p in self.perturbations:
                key = f"perturbed:{p.name}"
                lm = np.load(altered[key] / "landmarks.npz")["landmarks"]
                image_of = reproduce.perturbed_image_of(self.rows, p)
                sub = [self.rows[i] for i in self.test_idx]
                crops = ex.crops(sub, lm, lambda k, f=image_of: f(self.test_idx[k]))
                result[key] = ex.counts(crops, f"facenet wide {key}")
            np.savez(path, ms_per_face=ms, **result)
        self._take(path, "facenet_wide")


# -- classifiers: fit on (F, y, groups), return P(fake) of new features ---------------------


# C grids narrowed to where today's model lands (C = 1e-4 of 1e-5..1): each fit is minutes here
SVM_CS = (1e-5, 1e-4, 1e-3)


def linear_svm(F, y, groups, sample_weight=None) -> Predict:
    det = FakeSpotter(backbone="sface", variant="channel", Cs=SVM_CS).fit_features(
        F, y, groups=groups, sample_weight=sample_weight
    )
    return lambda X: det.predict_proba(features=X)[:, 1]


def _standardized(F):
    mean, scale = F.mean(0), F.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return mean, scale


def _folds(y, groups):
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(y, y, groups))


def logistic(F, y, groups) -> Predict:
    from sklearn.linear_model import LogisticRegressionCV

    mean, scale = _standardized(F)
    clf = LogisticRegressionCV(
        Cs=(1e-4, 1e-3, 1e-2), cv=_folds(y, groups), scoring="roc_auc", max_iter=500
    ).fit((F - mean) / scale, y)
    return lambda X: clf.predict_proba((X - mean) / scale)[:, 1]


def rbf_features_svm(F, y, groups) -> Predict:
    """An RBF-kernel SVM, approximated: 1,000 Nystroem features, then the linear SVM."""
    from sklearn.kernel_approximation import Nystroem

    mean, scale = _standardized(F)
    mapper = Nystroem(gamma=1.0 / F.shape[1], n_components=1000, random_state=0)
    Z = mapper.fit_transform((F - mean) / scale).astype(np.float32)
    det = FakeSpotter(backbone="sface", variant="channel", Cs=SVM_CS).fit_features(
        Z, y, groups=groups
    )
    return lambda X: det.predict_proba(features=mapper.transform((X - mean) / scale))[:, 1]


def boosting(F, y, groups) -> Predict:
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, max_features=0.2, early_stopping=True, random_state=0
    ).fit(F, y)
    return lambda X: clf.predict_proba(X)[:, 1]


FITS = {"svm": linear_svm, "logistic": logistic, "rbf": rbf_features_svm, "boosting": boosting}


# -- features of an idea, from one part's sources -------------------------------------------


def _per_layer_levels(kmc: np.ndarray) -> np.ndarray:
    """k-multisection per layer (N x taps*4) from its per-channel columns (channel-major)."""
    out = []
    for s in _slices(KMC).values():
        block = kmc[:, s].astype(np.float32)
        out.append(block.reshape(len(kmc), -1, len(KMC.levels)).sum(1))
    return np.concatenate(out, axis=1)


def _f32(*arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays], axis=1)


FEATURES: dict[str, Callable[[dict], np.ndarray]] = {
    "layer": lambda s: counts_per_layer(s["sface"].astype(np.float32), _slices("channel")),
    "channel": lambda s: _f32(s["sface"]),
    "log": lambda s: np.log1p(_f32(s["sface"])),
    "kml": lambda s: _per_layer_levels(s["kmc"]),
    "kmc": lambda s: _f32(s["kmc"]),
    "stats": lambda s: _f32(s["stats"]),
    "channel+kml": lambda s: _f32(s["sface"], _per_layer_levels(s["kmc"])),
    "sface+facenet": lambda s: _f32(s["sface"], s["facenet"]),
    "sface+dlib": lambda s: _f32(s["sface"], s["dlib"]),
    "facenet": lambda s: _f32(s["facenet"]),
    "facenet_wide": lambda s: _f32(s["facenet_wide"]),
    "facenet+wide": lambda s: _f32(s["facenet"], s["facenet_wide"]),
}
SOURCES = {  # the networks' passes each feature set needs, for its cost
    "layer": ("sface",), "channel": ("sface",), "log": ("sface",), "kml": ("kmc",),
    "kmc": ("kmc",), "stats": ("stats",), "channel+kml": ("kmc",), "sface+facenet": ("sface", "facenet"),
    "sface+dlib": ("sface", "dlib"), "facenet": ("facenet",), "facenet_wide": ("facenet_wide",),
    "facenet+wide": ("facenet", "facenet_wide"),
}  # fmt: skip


def needs_of(idea: dict) -> set[str]:
    """The sources (Parts.build) that measuring ``idea`` reads."""
    needs = set(SOURCES[idea["features"]])
    if "pipeline" in idea["views"]:
        needs.add("pipeline")
    if idea["tta"] or "mirror" in idea["views"]:
        needs.add("mirror_sface")
    return needs


# -- the ideas ------------------------------------------------------------------------------


def ideas() -> list[dict]:
    """name, features (a FEATURES key), classifier, training views, TTA, and the CLI
    options that train it (``ship``; None where the command line cannot yet)."""
    base = {"features": "channel", "fit": "svm", "views": ("aug",), "tta": False}
    sface = ["--backbone", "sface", "--variant", "channel", "--augment"]
    return [
        {"name": "paper: layer counts, linear SVM", **base, "features": "layer", "views": (),
         "ship": ["--backbone", "sface", "--variant", "layer"]},
        {"name": "channel counts, linear SVM, no augmentation", **base, "views": (),
         "ship": ["--backbone", "sface", "--variant", "channel"]},
        {"name": "today's default: channel, linear SVM, + augmented copy", **base,
         "ship": sface},
        {"name": "+ mirrored face averaged in at test time", **base, "tta": True, "ship": None},
        {"name": "log counts", **base, "features": "log", "ship": None},
        {"name": "k-multisection per layer (4 levels)", **base, "features": "kml",
         "ship": ["--backbone", "sface", "--variant", "kmultisection", "--augment"]},
        {"name": "per-channel statistics (mean, std of each channel's outputs)", **base,
         "features": "stats", "ship": None},
        {"name": "k-multisection per channel (44,288 features)", **base, "features": "kmc",
         "ship": ["--backbone", "sface", "--variant", "kmultisection-channel", "--augment"]},
        {"name": "channel counts + k-multisection per layer", **base, "features": "channel+kml",
         "ship": None},
        {"name": "fusion: SFace + FaceNet channel counts", **base, "features": "sface+facenet",
         "ship": None},
        {"name": "fusion: SFace + dlib channel counts", **base, "features": "sface+dlib",
         "ship": None},
        {"name": "context: FaceNet tight crop (160 px), no augmentation", **base,
         "features": "facenet", "views": (),
         "ship": ["--backbone", "facenet", "--variant", "channel"]},
        {"name": "context: FaceNet 1.4x margin at 224 px, no augmentation", **base,
         "features": "facenet_wide", "views": (), "ship": None},
        {"name": "context: FaceNet tight + 1.4x wide (two views), no augmentation", **base,
         "features": "facenet+wide", "views": (), "ship": None},
        {"name": "logistic regression (C by 5-fold AUC)", **base, "fit": "logistic",
         "ship": None},
        {"name": "RBF SVM (1,000 Nystroem features)", **base, "fit": "rbf", "ship": None},
        {"name": "gradient boosting on counts", **base, "fit": "boosting", "ship": None},
        {"name": "+ mirrored copies in training and at test time", **base,
         "views": ("aug", "mirror"), "tta": True, "ship": None},
        {"name": "photo-pipeline copy in place of the augmented copy", **base,
         "views": ("pipeline",), "ship": [*sface[:-1], "--augment", "pipeline"]},
        {"name": "augmented + photo-pipeline copies (two views of each photo)", **base,
         "views": ("aug", "pipeline"), "ship": [*sface[:-1], "--augment", "simple,pipeline"]},
        {"name": "augmented copy, each generator weighing the same", **base, "balance": True,
         "ship": None},
        {"name": "k-multisection per channel + photo-pipeline copy", **base, "features": "kmc",
         "views": ("pipeline",), "ship": ["--backbone", "sface", "--variant",
                                          "kmultisection-channel", "--augment", "pipeline"]},
        {"name": "k-multisection per channel + augmented and photo-pipeline copies", **base,
         "features": "kmc", "views": ("aug", "pipeline"),
         "ship": ["--backbone", "sface", "--variant", "kmultisection-channel", "--augment",
                  "simple,pipeline"]},
    ]  # fmt: skip


def generator_weights(y: np.ndarray, generators: np.ndarray) -> np.ndarray:
    """Row weights: every fake generator the same total (fakes still weigh their count in
    all), real rows 1."""
    w = np.ones(len(generators))
    fake = y == 1
    names, counts = np.unique(generators[fake], return_counts=True)
    for name, count in zip(names, counts, strict=True):
        w[generators == name] = fake.sum() / (len(names) * count)
    return w


def brier(y, p) -> float:
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def run(limit=None, match: tuple[str, ...] = ()) -> list[dict]:
    """Every idea's row. With ``match``, only the ideas whose name holds one of those texts
    are measured (and only the sources they read are built); on the full set the other rows
    come from the record (docs/detection_v2.json), which a full-set run then updates."""
    chosen = [i for i in ideas() if not match or any(m in i["name"] for m in match)]
    if not chosen:
        raise SystemExit(f"no idea's name holds any of {list(match)}")
    rows = reproduce.read_manifest(limit)
    study = reproduce.Study(rows)
    needs = set().union(*(needs_of(i) for i in chosen))
    parts = Parts(rows, limit).build(needs)
    measured = {}
    for idea in chosen:
        cache = parts.out / (
            "idea_" + "".join(c if c.isalnum() else "_" for c in idea["name"]) + ".json"
        )
        if cache.exists():
            measured[idea["name"]] = json.loads(cache.read_text())
            continue
        measured[idea["name"]] = measure_idea(idea, study, parts)
        cache.write_text(json.dumps(measured[idea["name"]], indent=2))
        print(json.dumps(measured[idea["name"]]), flush=True)
    record = {}
    if limit is None and RECORD.exists():
        record = {r["idea"]: r for r in json.loads(RECORD.read_text())}
    results = []
    for idea in ideas():
        row = measured.get(idea["name"]) or record.get(idea["name"])
        if row is None:
            print(f"not measured yet: {idea['name']!r} (run without --match)", file=sys.stderr)
            continue
        # the recipe is the code's, not the measurement's: a kept row takes today's
        row = {**row, "ship": idea["ship"]}
        sources = SOURCES[idea["features"]]
        if all(src in parts.ms_per_face for src in sources):
            # ms/face from this run's passes for every row that reads them, so that rows
            # with the same features cost the same (the rule compares costs within a run)
            cost = sum(parts.ms_per_face[src] for src in sources)
            row["ms_per_face"] = cost * (2.0 if idea["tta"] else 1.0)
            row["ms_measured_now"] = True
        else:
            row.pop("ms_measured_now", None)
        results.append(row)
    (parts.out / "results.json").write_text(json.dumps(results, indent=2))
    if limit is None:
        RECORD.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per split and class")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument(
        "--results-doc",
        action="store_true",
        help=f"write the table as the {reproduce.DETECTION_V2!r} section of docs/results.md",
    )
    parser.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="TEXT",
        help="measure only the ideas whose name holds TEXT (repeatable); the other rows "
        "come from docs/detection_v2.json",
    )
    args = parser.parse_args()
    results = run(args.limit, tuple(args.match))
    if args.results_doc and not args.limit:
        text = markdown(results, args.limit, heading=f"## {reproduce.DETECTION_V2}")
        doc = reproduce.ROOT / "docs" / "results.md"
        doc.write_text(reproduce.with_section(doc.read_text(), reproduce.DETECTION_V2, text))
        print(f"wrote the {reproduce.DETECTION_V2} section of docs/results.md")
        return
    text = markdown(results, args.limit)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


_FITTED: dict = {}  # (idea minus "tta", "main" | "logo") -> Predict: a refit would be identical


def measure_idea(idea, study, parts: Parts) -> dict:
    split, y, gen = study.split, study.y, study.gen
    features = FEATURES[idea["features"]]

    def view(part: str, mirrored: bool = False) -> np.ndarray:
        data = parts.data[part]
        if mirrored:  # the mirrored SFace counts in place of the plain ones
            data = {**data, "sface": data["mirror_sface"]}
        return features(data)

    F = view("clean")
    F_mirror = view("clean", mirrored=True) if idea["tta"] or "mirror" in idea["views"] else None
    have = parts.found["clean"]

    def fit(train_mask, which: str) -> Predict:
        key = (json.dumps({k: v for k, v in idea.items() if k not in ("name", "tta")}), which)
        if key not in _FITTED:
            _FITTED[key] = fit_new(train_mask)
        return _FITTED[key]

    def fit_new(train_mask) -> Predict:
        photos = np.flatnonzero(train_mask & (split == "train") & have)  # never val or test
        parts_, ys, groups = [F[photos]], [y[photos]], [photos]
        if "aug" in idea["views"]:
            A = view("aug")
            keep = np.isin(parts.train_idx, photos) & parts.found["aug"]
            parts_.append(A[keep])
            ys.append(y[parts.train_idx[keep]])
            groups.append(parts.train_idx[keep])
        if "mirror" in idea["views"]:
            parts_.append(F_mirror[photos])
            ys.append(y[photos])
            groups.append(photos)
        if "pipeline" in idea["views"]:
            A = view("pipeline")
            keep = np.isin(parts.train_idx, photos) & parts.found["pipeline"]
            parts_.append(A[keep])
            ys.append(y[parts.train_idx[keep]])
            groups.append(parts.train_idx[keep])
        X = np.concatenate(parts_)
        del parts_
        groups_ = np.concatenate(groups)
        if idea.get("balance"):  # each generator's fakes weigh as much in all as any other's
            y_ = np.concatenate(ys)
            return linear_svm(X, y_, groups_, generator_weights(y_, gen[groups_]))
        return FITS[idea["fit"]](X, np.concatenate(ys), groups_)

    def scores(predict, X, X_mirror, found) -> np.ndarray:
        p = predict(X[found]) if found.any() else np.zeros(0)
        if idea["tta"] and found.any():
            p = (p + predict(X_mirror[found])) / 2
        return scores_with_missing(p, found)

    predict = fit(split == "train", "main")
    p = scores(predict, F, F_mirror, have)
    val, test, wild = split == "val", split == "test", split == "wild"
    point = choose_operating_point(p[val], y[val])
    t = point["threshold"]
    m_test = evaluate_scores(y[test], p[test])
    at_point = evaluate_scores(y[test], p[test], t)
    m_wild = evaluate_scores(y[wild], p[wild], t)
    ms = sum(parts.ms_per_face[s] for s in SOURCES[idea["features"]])
    result = {
        "idea": idea["name"],
        "features": idea["features"],
        "n_features": int(F.shape[1]),
        "ship": idea["ship"],
        "val_auc": evaluate_scores(y[val], p[val])["auc"],
        "val_brier": brier(y[val & have], p[val & have]),
        "test_auc": m_test["auc"],
        "test_accuracy": m_test["accuracy"],
        "threshold": t,
        "test_caught": at_point["fake_accuracy"],
        "test_kept": at_point["real_accuracy"],
        "wild_called_fake": 1 - m_wild["real_accuracy"],
        "cost": 2.0 if idea["tta"] else 1.0,
        "ms_per_face": ms * (2.0 if idea["tta"] else 1.0),
    }
    # leave-one-generator-out: real + StyleGAN1 only
    seen = "StyleGAN1"
    logo = fit((y == 0) | (gen == seen), "logo")
    p_logo = scores(logo, F, F_mirror, have)
    val_seen = val & ((y == 0) | (gen == seen))
    t_logo = choose_operating_point(p_logo[val_seen], y[val_seen])["threshold"]
    worst = []
    for unseen in sorted(set(gen[y == 1]) - {seen}):
        rows = test & ((y == 0) | (gen == unseen))
        if (y[rows] == 1).any():
            m = evaluate_scores(y[rows], p_logo[rows], t_logo)
            worst.append((m["auc"], m["fake_accuracy"], unseen))
            result[f"logo_{unseen}_auc"] = m["auc"]
            result[f"logo_{unseen}_caught"] = m["fake_accuracy"]
    result["logo_auc_min"] = min(w[0] for w in worst) if worst else None
    result["logo_caught_min"] = min(w[1] for w in worst) if worst else None
    result["logo_worst"] = min(worst)[2] if worst else None
    # perturbed test copies, against clean test at the same point
    drops = {"auc": 0.0, "caught": 0.0, "kept": 0.0}
    y_test = y[test]
    for p_ in parts.perturbations:
        key = f"perturbed:{p_.name}"
        P = view(key)
        P_mirror = view(key, mirrored=True) if idea["tta"] else None
        q = scores(predict, P, P_mirror, parts.found[key])
        m = evaluate_scores(y_test, q, t)
        drops["auc"] = max(drops["auc"], m_test["auc"] - m["auc"])
        drops["caught"] = max(drops["caught"], at_point["fake_accuracy"] - m["fake_accuracy"])
        drops["kept"] = max(drops["kept"], at_point["real_accuracy"] - m["real_accuracy"])
        result[f"perturbed_{p_.name}_auc"] = m["auc"]
    result |= {f"max_drop_{k}": v for k, v in drops.items()}
    return result


_SLICES: dict = {}


def _slices(criterion) -> dict:
    """Each SFace tap's columns under ``criterion`` (channel counts sum to the paper's)."""
    key = getattr(criterion, "name", criterion) + str(getattr(criterion, "per_channel", ""))
    if key not in _SLICES:
        bb = get_backbone("sface").untrained()
        _SLICES[key] = NeuronCoverage(
            bb.model, bb.taps(), criterion, "raw", bb.activations
        ).feature_slices
    return _SLICES[key]


def markdown(results: list[dict], limit, heading: str = "# Detection v2") -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    best = max(results, key=lambda r: r["val_auc"])
    lines = [
        heading,
        "",
        "Made by `python -m benchmarks.detection_v2"
        + (f" --limit {limit}" if limit else "")
        + "` (`--results-doc`: as this section of docs/results.md); the protocol is in the "
        "script's docstring. Chosen on val AUC only; the other columns are for reading, not "
        "choosing. Caught / kept / wild: at the threshold chosen on val for 1% false alarms. "
        "LOGO: trained on real + StyleGAN1, worst unseen generator. Drops: the largest over "
        "jpeg:50, blur:1, noise:5 and resize:0.5 test copies. ms/face: feature extraction "
        "measured in the run (2 cores), not the face detector. Every row is kept in "
        "docs/detection_v2.json; `--match TEXT` measures again only the ideas whose name "
        "holds TEXT and keeps the others' rows.",
        "",
        "| idea | features | val AUC | val Brier | test AUC | test acc @0.5 | caught | kept "
        "| wild/real called fake | worst LOGO AUC | LOGO caught | AUC drop | caught drop "
        "| kept drop | ms/face |",
        "|---|" + "---|" * 14,
    ]
    carried = any(r.get("from_table") for r in results)
    for r in results:
        mark = " **(best on val)**" if r is best else ""
        if r.get("from_table"):
            mark += " †"
        lines.append(
            f"| {r['idea']}{mark} | {r.get('n_features', 0):,} | {num(r['val_auc'], 4)} | "
            f"{num(r['val_brier'], 4)} | "
            f"{num(r['test_auc'], 4)} | {pct(r['test_accuracy'])} | {pct(r['test_caught'])} | "
            f"{pct(r['test_kept'])} | {pct(r['wild_called_fake'])} | "
            f"{num(r['logo_auc_min'])} ({r['logo_worst']}) | {pct(r['logo_caught_min'])} | "
            f"{num(r['max_drop_auc'])} | {pct(r['max_drop_caught'])} | "
            f"{pct(r['max_drop_kept'])} | {num(r.get('ms_per_face'), 1)} |"
        )
    shippable = [r for r in results if r.get("ship")]
    if carried:
        lines += [
            "",
            "† kept from the earlier full run ("
            + next(r["from_table"] for r in results if r.get("from_table"))
            + "); the code measures them the same way, and the rows measured again in this "
            "run came out the same (e.g. today's default). ms/face is this run's wherever the "
            "row's networks ran in it; "
            + (
                "the others' are the earlier run's."
                if not all(r.get("ms_measured_now") for r in results)
                else "every row's is."
            ),
        ]
    lines += [
        "",
        "The rows that `fakespotter train` can train, so the candidates for the shipped default "
        "(the rule is in benchmarks/train_default.py): "
        + "; ".join(f"{r['idea']} (`{' '.join(r['ship'])}`)" for r in shippable)
        + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

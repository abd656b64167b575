"""Reproduce the paper's experiment on ../shared/faces, go beyond it, write docs/results.md.

    python -m benchmarks.reproduce                 # every stage, cached under out/reproduce/full-<key>/
    python -m benchmarks.reproduce --limit 30      # a quick smoke run on 30 images per split/class
    python -m benchmarks.detection_v2 --results-doc  # only the Detection v2 section

Stages (each cached under out/reproduce/<run>-<key>/, so a rerun only does what is missing;
<key> is a hash of the data manifest, the stage parameters, fakespotter's version and the
code of the package and of benchmarks/, so changed code or inputs start a fresh cache; delete
a file to redo its stage):
1. landmarks.npz: MTCNN on every image of train/val/test/wild; the largest face's 5 landmarks.
2. features_<backbone>.npz: crops aligned to the backbone's template from those landmarks;
   per-layer thresholds from the train split only (paper Eq. 1); one hooked forward pass per
   image gives the channel counts (Eq. 2 per channel), the layer counts (their sums per layer)
   and the final embedding. features_facenet_activation.npz: the same, post-activation neurons.
3. altered/<perturbation>/: each test photo perturbed before detection (--perturb), detected,
   aligned and counted with the clean thresholds; altered/augment/: one random perturbation of
   each train photo (the augmented training set).
4. pixel_cnn.npz / .safetensors: the pixel CNN baseline (benchmarks/pixel_cnn.py), trained
   within --cnn-minutes; pixel_cnn_perturbed.json: its perturbed-test metrics.
5. richer_sface.npz: the beyond-the-paper coverage features (benchmarks/coverage_variants.py).
Then, from the caches: FakeSpotter's classifier (standardize, linear SVM with C by 5-fold CV
on train, Platt calibration) for every row of every table, measured on val, test, wild/real,
the perturbed test copies and leave-one-generator-out splits; results.json and docs/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from benchmarks import coverage_variants, pixel_cnn
from fakespotter.backbones import BACKBONES as REGISTERED
from fakespotter.backbones import backbones_with_weights, get_backbone
from fakespotter.coverage import NeuronCoverage, counts_per_layer
from fakespotter.detector import FakeSpotter
from fakespotter.evaluation.perturb import (
    Perturbation,
    RandomAugmentation,
    image_rng,
    parse_perturbations,
)
from fakespotter.faces import load_image, warp_face
from fakespotter.faces.pipeline import FaceCropper, largest_face
from fakespotter.metrics import evaluate_scores
from fakespotter.training import copies_of, fit_with_copies, scores_with_missing

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
OUT = ROOT / "out" / "reproduce"
SPLITS = ("train", "val", "test", "wild")
BACKBONES = tuple(REGISTERED)  # every registered backbone, in registration order
VARIANTS = ("layer", "channel", "embedding")
# The paper's Table 4 (accuracy, %): FakeSpotter with each backbone on its own data.
PAPER = {"facenet": 84.78, "openface": 80.25, "vgg-face": 78.59}
PERTURBATIONS = "jpeg:90,jpeg:75,jpeg:50,blur:1,blur:2,noise:2,noise:5,resize:0.5"
PERTURB_SEED = 0  # noise of image i under a perturbation: image_rng(PERTURB_SEED, i)
AUGMENT_SEED = 1
LOGO_TRAIN = ("StyleGAN1", "StyleGAN2:TPDNE")


def cache_key(args) -> str:
    """What the cached stages depend on: the data (the manifest), the parameters that shape
    the stages, fakespotter's version and its code and this folder's. Any change gives a new
    cache folder, so a stage never reuses results made by other code or inputs."""
    import hashlib
    from importlib.metadata import version

    digest = hashlib.sha256()
    params = {
        k: getattr(args, k)
        for k in ("limit", "backbones", "neuron_study", "perturb", "augment", "cnn_minutes")
    }
    digest.update(json.dumps([version("fakespotter"), params], sort_keys=True).encode())
    sources = sorted((ROOT / "src" / "fakespotter").rglob("*.py")) + sorted(
        (ROOT / "benchmarks").glob("*.py")
    )
    for path in [FACES / "manifest.csv", *sources]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_manifest(limit: int | None) -> list[dict]:
    with open(FACES / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] in SPLITS]
    if limit:
        kept, seen = [], {}
        for r in rows:
            key = (r["split"], r["label"])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= limit:
                kept.append(r)
        rows = kept
    return rows


def landmark_finder() -> FaceCropper:
    """The CLI's detector settings; only the landmarks of its crops are used."""
    sface = get_backbone("sface")
    return FaceCropper(sface.input_size, sface.alignment_template)


def stage_landmarks(rows: list[dict], path: Path) -> np.ndarray:
    if path.exists():
        cached = np.load(path)
        if list(cached["files"]) == [r["file"] for r in rows]:
            return cached["landmarks"]
    cropper = landmark_finder()
    landmarks = np.full((len(rows), 5, 2), np.nan)
    start = time.perf_counter()
    for i, r in enumerate(tqdm(rows, desc="MTCNN", unit="img")):
        faces = cropper(load_image(FACES / r["file"]))  # same detector settings as the CLI
        if faces:
            landmarks[i] = largest_face(faces).landmarks
    seconds = time.perf_counter() - start
    np.savez(path, files=np.array([r["file"] for r in rows]), landmarks=landmarks, seconds=seconds)
    return landmarks


def align_all(rows, landmarks, bb, image_of=None) -> np.ndarray:
    """Crops aligned to ``bb``'s template (zeros where no face was found)."""
    image_of = image_of or (lambda i: load_image(FACES / rows[i]["file"]))
    crops = np.zeros((len(rows), bb.input_size, bb.input_size, 3), np.uint8)
    for i in tqdm(
        np.flatnonzero(~np.isnan(landmarks[:, 0, 0])), desc=f"align {bb.name}", unit="img"
    ):
        crops[i] = warp_face(image_of(i), landmarks[i], bb.alignment_template, bb.input_size)
    return crops


def extract(coverage: NeuronCoverage, bb, crops: np.ndarray, desc: str, batch: int = 32) -> dict:
    """Channel counts, layer counts and the embedding of every crop, one forward pass each."""
    channel, embedding = [], []
    for i in tqdm(range(0, len(crops), batch), desc=desc):
        f, out = coverage.transform(bb.preprocess(crops[i : i + batch]), return_output=True)
        channel.append(f)
        embedding.append(out.numpy())
    channel = np.concatenate(channel)
    return dict(
        channel=channel,
        layer=counts_per_layer(channel, coverage.feature_slices),
        embedding=np.concatenate(embedding),
    )


def stage_features(rows, landmarks, name: str, path: Path, neuron: str = "raw") -> dict:
    if path.exists():
        return dict(np.load(path))
    bb = get_backbone(name).load()
    have = ~np.isnan(landmarks[:, 0, 0])
    crops = align_all(rows, landmarks, bb)
    split = np.array([r["split"] for r in rows])
    taps = bb.taps()
    coverage = NeuronCoverage(bb.model, taps, "channel", neuron, bb.activations)
    train = np.flatnonzero((split == "train") & have)
    batch = 32
    start = time.perf_counter()
    coverage.fit(
        bb.preprocess(crops[train[i : i + batch]])
        for i in tqdm(range(0, len(train), batch), desc=f"thresholds {name}")
    )
    threshold_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = extract(coverage, bb, crops, f"coverage {name}")
    result.update(
        thresholds=coverage.thresholds_,
        have=have,
        taps=np.array([t.name for t in taps]),
        threshold_seconds=threshold_seconds,
        extract_seconds=time.perf_counter() - start,
    )
    np.savez(path, **result)
    return result


def stage_sface_crops(rows, landmarks, out: Path) -> np.ndarray:
    """Every image aligned to SFace's 112 px template: the pixel CNN's input."""
    path = out / "crops_sface.npy"
    if path.exists():
        return np.load(path)
    crops = align_all(rows, landmarks, get_backbone("sface").untrained())
    np.save(path, crops)
    return crops


def stage_pixel_cnn(rows, landmarks, out: Path, minutes: float) -> dict:
    """Train the pixel CNN baseline on train (best epoch by val AUC); P(fake) for every image."""
    path = out / "pixel_cnn.npz"
    if path.exists():
        cached = np.load(path, allow_pickle=False)
        return {"p_fake": cached["p_fake"], "log": json.loads(str(cached["log"]))}
    crops = stage_sface_crops(rows, landmarks, out)
    split = np.array([r["split"] for r in rows])
    y = np.array([int(r["label"] == "fake") for r in rows])
    have = ~np.isnan(landmarks[:, 0, 0])
    train, val = (split == "train") & have, (split == "val") & have
    model, log = pixel_cnn.train(
        crops[train],
        y[train],
        crops[val],
        y[val],
        minutes=minutes,
        log=lambda m: print(m, flush=True),
    )
    p_fake = np.where(have, pixel_cnn.predict(model, crops), 0.0)
    save_file(model.state_dict(), str(out / "pixel_cnn.safetensors"))
    np.savez(path, p_fake=p_fake, log=json.dumps(log))
    return {"p_fake": p_fake, "log": log}


def stage_altered(
    rows, idx: np.ndarray, image_of, tag: str, out: Path, backbones, clean: dict
) -> dict:
    """Detect, align and extract features of altered copies of images ``idx``.

    ``image_of(i)`` gives image i's altered copy (deterministic); thresholds are the clean
    train split's, as a deployed model would use. Cached per tag and backbone.
    """
    folder = out / "altered" / tag.replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    lm_path = folder / "landmarks.npz"
    if lm_path.exists():
        landmarks = np.load(lm_path)["landmarks"]
    else:
        cropper = landmark_finder()
        landmarks = np.full((len(idx), 5, 2), np.nan)
        for k, i in enumerate(tqdm(idx, desc=f"MTCNN {tag}", unit="img")):
            faces = cropper(image_of(i))
            if faces:
                landmarks[k] = largest_face(faces).landmarks
        np.savez(lm_path, landmarks=landmarks, idx=idx)
    result = {}
    for name in backbones:
        path = folder / f"features_{name}.npz"
        if not path.exists():
            bb = get_backbone(name).load()
            sub = [rows[i] for i in idx]
            crops = align_all(sub, landmarks, bb, image_of=lambda k: image_of(idx[k]))
            if name == "sface":
                np.save(folder / "crops_sface.npy", crops)
            coverage = NeuronCoverage(
                bb.model,
                bb.taps(),
                "channel",
                "raw",
                bb.activations,
                thresholds=clean[name]["thresholds"],
            )
            feats = extract(coverage, bb, crops, f"coverage {name} {tag}")
            feats["have"] = ~np.isnan(landmarks[:, 0, 0])
            np.savez(path, **feats)
        result[name] = dict(np.load(path))
    return result


def perturbed_image_of(rows, p: Perturbation):
    return lambda i: p(load_image(FACES / rows[i]["file"]), image_rng(PERTURB_SEED, i))


def augmented_image_of(rows):
    return lambda i: RandomAugmentation(AUGMENT_SEED, i)(load_image(FACES / rows[i]["file"]))


def stage_richer(rows, landmarks, out: Path, name: str = "sface") -> dict:
    """The beyond-the-paper coverage features (coverage_variants) of every image."""
    path = out / f"richer_{name}.npz"
    if path.exists():
        return dict(np.load(path))
    bb = get_backbone(name).load()
    crops = (
        stage_sface_crops(rows, landmarks, out)
        if name == "sface"
        else align_all(rows, landmarks, bb)
    )
    split = np.array([r["split"] for r in rows])
    have = ~np.isnan(landmarks[:, 0, 0])
    # Layer means, stds and per-neuron means from every 4th training image (1,490): enough
    # for a mean, and a quarter of the cost of this slow, study-only extractor.
    train = np.flatnonzero((split == "train") & have)[::4]
    taps, batch = bb.taps(), 32
    stats = coverage_variants.fit(
        bb.model,
        taps,
        (
            bb.preprocess(crops[train[i : i + batch]])
            for i in tqdm(range(0, len(train), batch), desc="richer fit")
        ),
    )
    steps = range(0, len(rows), batch)
    feats = coverage_variants.extract(
        bb.model, taps, stats, (bb.preprocess(crops[i : i + batch]) for i in steps), len(steps)
    )
    np.savez(path, **feats)
    return feats


class Study:
    """Labels, splits and generators of the rows, and the fit-and-measure protocol."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.split = np.array([r["split"] for r in rows])
        self.y = np.array([int(r["label"] == "fake") for r in rows])
        self.gen = np.array([r["generator"] for r in rows])

    def fit(self, name, variant, F, have, train=None, aug=None) -> FakeSpotter:
        """FakeSpotter's classifier on the train rows with a face (``train`` narrows them).

        ``aug`` = (features, row indices, have) of augmented copies of some rows: a copy joins
        the training data when its row does.
        """
        rows = (self.split == "train") & (True if train is None else train)
        photos = np.flatnonzero(rows & have)
        det = FakeSpotter(backbone=name, variant=variant)
        if aug is None:
            return fit_with_copies(det, F[photos], self.y[photos])
        F_aug, idx, have_aug = aug
        keep, copy_of = copies_of(list(photos), list(idx[have_aug]))  # a copy folds with its photo
        copies = np.flatnonzero(have_aug)[keep]
        return fit_with_copies(
            det, F[photos], self.y[photos], F_aug[copies], self.y[idx][copies], copy_of
        )

    @staticmethod
    def scores(det, F, have) -> np.ndarray:
        """P(fake); an image with no face found counts as predicted real (0)."""
        p_found = det.predict_proba(features=F[have])[:, 1] if have.any() else np.zeros(0)
        return scores_with_missing(p_found, have)

    def measure(self, det, F, have) -> dict:
        return self.measure_scores(self.scores(det, F, have), have)

    def measure_scores(self, p_fake, have) -> dict:
        """Metrics per split from per-image P(fake); no face found counts as real (0)."""
        p = scores_with_missing(np.asarray(p_fake)[have], have)
        return {
            s: evaluate_scores(self.y[self.split == s], p[self.split == s])
            | {"n_no_face": int((~have[self.split == s]).sum())}
            for s in ("val", "test", "wild")
        }

    def logo(self, name, variant, F, have, aug=None, trained_on=LOGO_TRAIN) -> list[dict]:
        """Train on real + ONE generator's fakes; test on test-split real + each other generator."""
        out = []
        for seen in trained_on:
            if not ((self.split == "train") & (self.gen == seen)).any():
                continue  # a --limit run may have none
            det = self.fit(
                name, variant, F, have, train=(self.y == 0) | (self.gen == seen), aug=aug
            )
            for unseen in sorted(set(self.gen[self.y == 1]) - {seen}):
                test = (self.split == "test") & ((self.y == 0) | (self.gen == unseen))
                if not (test & (self.y == 1)).any():
                    continue
                m = evaluate_scores(self.y[test], self.scores(det, F[test], have[test]))
                out.append(
                    {
                        "backbone": name,
                        "variant": variant,
                        "train_generator": seen,
                        "test_generator": unseen,
                        **m,
                    }
                )
        return out


def perturbed_metrics(study: Study, det, altered: dict, key: str, name: str) -> dict:
    """Metrics of ``det`` on every perturbed copy of the test split (features ``key``)."""
    test_y = study.y[study.split == "test"]
    out = {}
    for pname, feats in altered.items():
        f = feats[name]
        out[pname] = evaluate_scores(test_y, study.scores(det, f[key], f["have"].astype(bool)))
    return out


def stage_cnn_perturbed(study: Study, out: Path, perturbations) -> dict:
    """The pixel CNN's metrics on the perturbed test crops."""
    path = out / "pixel_cnn_perturbed.json"
    if path.exists():
        return json.loads(path.read_text())
    model = pixel_cnn.PixelCNN()
    model.load_state_dict(load_file(str(out / "pixel_cnn.safetensors")))
    test_y = study.y[study.split == "test"]
    result = {}
    for p in perturbations:
        folder = out / "altered" / p.name.replace(":", "_")
        crops = np.load(folder / "crops_sface.npy")
        have = ~np.isnan(np.load(folder / "landmarks.npz")["landmarks"][:, 0, 0])
        result[p.name] = evaluate_scores(
            test_y, np.where(have, pixel_cnn.predict(model, crops), 0.0)
        )
    path.write_text(json.dumps(result))
    return result


def pruning_study(
    study: Study, name: str, feats: dict, fractions=(0.25, 0.5, 0.75, 1.0)
) -> list[dict]:
    """``channel`` features of the first k taps only (a forward pass that stops at tap k)."""
    bb = get_backbone(name).untrained()
    taps = bb.taps()
    ends = np.cumsum([t.channels for t in taps])
    have = feats["have"].astype(bool)
    out = []
    for q in fractions:
        k = max(1, round(q * len(taps)))
        F = feats["channel"][:, : ends[k - 1]]
        m = study.measure(study.fit(name, "channel", F, have), F, have)
        out.append(
            {
                "backbone": name,
                "taps": k,
                "of": len(taps),
                "last_tap": taps[k - 1].name,
                "n_features": int(ends[k - 1]),
                **m,
            }
        )
    return out


def layer_levels(multi: np.ndarray, channels: list[int], n: int) -> np.ndarray:
    """N x (taps * n) per-layer counts at each level from N x (channels * n) ``multi`` counts."""
    out, start = [], 0
    for c in channels:
        out.append(multi[:, start : start + c * n].reshape(len(multi), c, n).sum(1))
        start += c * n
    return np.concatenate(out, axis=1)


def beyond_paper(study: Study, feats: dict, richer: dict | None, aug: dict) -> list[dict]:
    """Each idea against the paper's ``layer`` variant on the same split (SFace unless named).

    Feature matrices are built one idea at a time (the fused ones are gigabytes), and the
    unseen-generator check trains on StyleGAN1 only, the hardest direction in the
    generalization table.
    """
    base = "sface"
    have = feats[base]["have"].astype(bool)
    ideas = [
        ("layer (paper)", "layer", lambda: feats[base]["layer"], have, None),
        ("channel", "channel", lambda: feats[base]["channel"], have, None),
        (
            "channel, log(1 + count)",
            "channel",
            lambda: np.log1p(feats[base]["channel"]),
            have,
            None,
        ),
    ]
    if richer is not None:
        n = len(coverage_variants.LEVELS)
        levels = ", ".join(f"{z:g}" for z in coverage_variants.LEVELS)
        channels = [t.channels for t in get_backbone(base).untrained().taps()]
        ideas += [
            (
                f"layer, {n} thresholds m + z s per layer (z = {levels}; k-multisection)",
                "layer",
                lambda: layer_levels(richer["multi"], channels, n).astype(np.float32),
                have,
                None,
            ),
            (
                "channel, per-neuron thresholds",
                "channel",
                lambda: richer["neuron"].astype(np.float32),
                have,
                None,
            ),
            (
                f"channel, top {coverage_variants.TOP_FRACTION:.0%} of the layer (top-k)",
                "channel",
                lambda: richer["topk"].astype(np.float32),
                have,
                None,
            ),
        ]
    if "facenet" in feats:
        ideas.append(
            (
                "channel, fused sface + facenet",
                "channel",
                lambda: np.concatenate([feats[b]["channel"] for b in ("sface", "facenet")], axis=1),
                have & feats["facenet"]["have"].astype(bool),
                None,
            )
        )
    if base in aug:
        a = aug[base]
        ideas.append(
            (
                "channel + one augmented copy per training image",
                "channel",
                lambda: feats[base]["channel"],
                have,
                (a["channel"], a["idx"], a["have"].astype(bool)),
            )
        )
    out = []
    for label, variant, make, h, aug_set in tqdm(ideas, desc="beyond the paper"):
        F = make()
        m = study.measure(study.fit(base, variant, F, h, aug=aug_set), F, h)
        logo = study.logo(base, variant, F, h, aug=aug_set, trained_on=("StyleGAN1",))
        out.append(
            {
                "idea": label,
                "n_features": int(F.shape[1]),
                **m,
                "logo": logo,
                "logo_auc_min": min((r["auc"] for r in logo), default=None),
                "logo_fake_caught_min": min((r["fake_accuracy"] for r in logo), default=None),
            }
        )
        del F
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, help="images per split and class (smoke run)")
    parser.add_argument(
        "--backbones",
        nargs="+",
        help="default: every registered backbone whose weights are cached or can be fetched",
    )
    parser.add_argument(
        "--neuron-study",
        default="facenet",
        help="backbone on which raw vs activation neuron outputs are compared",
    )
    parser.add_argument("--perturb", default=PERTURBATIONS, help="perturbations of the test split")
    parser.add_argument(
        "--augment",
        nargs="*",
        default=["sface", "facenet"],
        help="backbones trained with one augmented copy per training image",
    )
    parser.add_argument(
        "--cnn-minutes",
        type=float,
        default=25.0,
        help="wall-clock budget of the pixel CNN baseline's training",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not (FACES / "manifest.csv").exists():
        sys.exit(f"reproduce: no face data at {FACES}")
    if args.backbones is None:  # before cache_key: the key names the backbones that run
        args.backbones = backbones_with_weights(BACKBONES)
    torch.manual_seed(0)
    out = args.out / f"{f'limit{args.limit}' if args.limit else 'full'}-{cache_key(args)}"
    print(f"stages cached under {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(args.limit)
    study = Study(rows)
    landmarks = stage_landmarks(rows, out / "landmarks.npz")
    have = ~np.isnan(landmarks[:, 0, 0])
    feats = {
        name: stage_features(rows, landmarks, name, out / f"features_{name}.npz")
        for name in args.backbones
    }
    perturbations = parse_perturbations(args.perturb)
    test = np.flatnonzero(study.split == "test")
    altered = {
        p.name: stage_altered(
            rows, test, perturbed_image_of(rows, p), p.name, out, args.backbones, feats
        )
        for p in perturbations
    }
    train = np.flatnonzero(study.split == "train")
    aug = {}
    if args.augment:
        by_name = stage_altered(
            rows, train, augmented_image_of(rows), "augment", out, args.augment, feats
        )
        aug = {name: f | {"idx": train} for name, f in by_name.items()}

    # The paper's Table 4, with robustness of every row.
    results = []
    for name in args.backbones:
        f = feats[name]
        h = f["have"].astype(bool)
        for variant in VARIANTS:
            start = time.perf_counter()
            det = study.fit(name, variant, f[variant], h)
            r = {
                "backbone": name,
                "variant": variant,
                "neuron": "raw",
                "n_features": int(f[variant].shape[1]),
                "C": det.C_,
                "cv_auc": det.cv_auc_,
                "fit_seconds": round(time.perf_counter() - start, 1),
                "threshold_seconds": float(f["threshold_seconds"]),
                "extract_seconds": float(f["extract_seconds"]),
                **study.measure(det, f[variant], h),
                "perturbed": perturbed_metrics(study, det, altered, variant, name),
            }
            results.append(r)
            print(
                json.dumps(
                    {k: r[k] for k in ("backbone", "variant", "C", "cv_auc")}
                    | {"test_auc": r["test"]["auc"], "wild_fp": 1 - r["wild"]["real_accuracy"]}
                ),
                flush=True,
            )
        if name in aug:
            det = study.fit(
                name,
                "channel",
                f["channel"],
                h,
                aug=(aug[name]["channel"], train, aug[name]["have"].astype(bool)),
            )
            results.append(
                {
                    "backbone": name,
                    "variant": "channel+aug",
                    "neuron": "raw",
                    "n_features": int(f["channel"].shape[1]),
                    "C": det.C_,
                    "cv_auc": det.cv_auc_,
                    **study.measure(det, f["channel"], h),
                    "perturbed": perturbed_metrics(study, det, altered, "channel", name),
                }
            )
    cnn = stage_pixel_cnn(rows, landmarks, out, args.cnn_minutes)
    results.append(
        {
            "backbone": "pixels",
            "variant": "pixel_cnn",
            "neuron": "raw",
            "n_features": cnn["log"]["n_params"],
            "training": cnn["log"],
            **study.measure_scores(cnn["p_fake"], have),
            "perturbed": stage_cnn_perturbed(study, out, perturbations),
        }
    )
    if args.neuron_study in args.backbones:
        f = stage_features(
            rows,
            landmarks,
            args.neuron_study,
            out / f"features_{args.neuron_study}_activation.npz",
            "activation",
        )
        for variant in ("layer", "channel"):
            det = study.fit(args.neuron_study, variant, f[variant], f["have"].astype(bool))
            results.append(
                {
                    "backbone": args.neuron_study,
                    "variant": variant,
                    "neuron": "activation",
                    "n_features": int(f[variant].shape[1]),
                    **study.measure(det, f[variant], f["have"].astype(bool)),
                }
            )

    generalization = []
    for name in args.backbones:
        for variant in VARIANTS:
            generalization += study.logo(
                name, variant, feats[name][variant], feats[name]["have"].astype(bool)
            )
    pruning = [r for name in args.backbones for r in pruning_study(study, name, feats[name])]
    richer = stage_richer(rows, landmarks, out) if "sface" in args.backbones else None
    ideas = beyond_paper(study, feats, richer, aug) if "sface" in args.backbones else []

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "command": "python -m benchmarks.reproduce"
        + (f" --limit {args.limit}" if args.limit else ""),
        "commit": commit,
        "n_images": len(rows),
        "perturbations": [p.name for p in perturbations],
        "n_per_split": {s: int((study.split == s).sum()) for s in SPLITS},
        "out": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "mtcnn_seconds": float(np.load(out / "landmarks.npz")["seconds"]),
    }
    report = {
        "meta": meta,
        "results": results,
        "generalization": generalization,
        "pruning": pruning,
        "beyond_paper": ideas,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'results.json'}")
    if not args.limit:
        figures = ROOT / "docs" / "results"
        figures.mkdir(parents=True, exist_ok=True)
        plot_robustness(results, meta["perturbations"], figures / "robustness.png")
        doc = ROOT / "docs" / "results.md"
        old = section(doc.read_text(), DETECTION_V2) if doc.exists() else None
        text = markdown(report)
        doc.write_text(with_section(text, DETECTION_V2, old) if old else text)
        print("wrote docs/results.md")


DETECTION_V2 = "Detection v2"  # a section of docs/results.md: detection_v2.py --results-doc


def section(doc: str, heading: str) -> str | None:
    """The ``## heading`` section of a markdown document (to the next ``## ``), or None."""
    lines = doc.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip() == f"## {heading}"]
    if not starts:
        return None
    end = next(
        (i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
    )
    return "".join(lines[starts[0] : end])


def with_section(doc: str, heading: str, text: str) -> str:
    """``doc`` with its ``## heading`` section replaced by ``text``, or ``text`` appended."""
    old = section(doc, heading)
    if old is not None:
        return doc.replace(old, text.rstrip("\n") + "\n\n", 1)
    return doc.rstrip("\n") + "\n\n" + text


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


VARIANT_NAMES = {
    "layer": "layer (paper MNC)",
    "channel": "channel",
    "embedding": "embedding (paper Fig. 2 baseline)",
    "channel+aug": "channel + augmented training",
    "pixel_cnn": "pixel CNN (paper's deep-CNN baseline)",
}
GOAL_PERTURBATIONS = ("jpeg:50", "blur:1", "noise:5")
SHIPPED = (
    "sface",
    "channel+aug",
)  # the shipped model's configuration (benchmarks/train_default.py)


def _label(r: dict) -> str:
    return f"{r['backbone']} {VARIANT_NAMES[r['variant']]}"


def headline_table(results: list[dict]) -> str:
    """Table 4 style: test accuracy / AUC per backbone and variant, wild/real false positives."""
    lines = [
        "| backbone | variant | features | test accuracy % | test AUC | real kept % | fakes caught % "
        "| wild/real called fake % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["neuron"] != "raw":
            continue
        t, w = r["test"], r["wild"]
        features = (
            f"{r['n_features']:,} weights"
            if r["variant"] == "pixel_cnn"
            else f"{r['n_features']:,}"
        )
        lines.append(
            f"| {r['backbone']} | {VARIANT_NAMES[r['variant']]} | {features} | {_pct(t['accuracy'])} | "
            f"{_num(t['auc'])} | {_pct(t['real_accuracy'])} | {_pct(t['fake_accuracy'])} | "
            f"{_pct(1 - w['real_accuracy'])} |"
        )
    return "\n".join(lines)


def generalization_table(rows: list[dict]) -> str:
    lines = [
        "| backbone | variant | trained on | tested on (unseen) | AUC | fakes caught % | real kept % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['variant']} | {r['train_generator']} | "
            f"{r['test_generator']} | {_num(r['auc'])} | {_pct(r['fake_accuracy'])} | "
            f"{_pct(r['real_accuracy'])} |"
        )
    return "\n".join(lines)


def robustness_tables(results: list[dict], perturbations: list[str]) -> str:
    rows = [r for r in results if "perturbed" in r]
    auc = [
        "| model | clean | " + " | ".join(perturbations) + " |",
        "|---" * (len(perturbations) + 2) + "|",
    ]
    for r in rows:
        auc.append(
            f"| {_label(r)} | {_num(r['test']['auc'])} | "
            + " | ".join(_num(r["perturbed"][p]["auc"]) for p in perturbations)
            + " |"
        )
    goals = [p for p in GOAL_PERTURBATIONS if p in perturbations]
    at = [
        "| model | clean fakes caught / real kept % | "
        + " | ".join(f"{p}: caught / kept (AUC drop)" for p in goals)
        + " |",
        "|---" * (len(goals) + 2) + "|",
    ]
    for r in rows:
        t = r["test"]
        cells = []
        for p in goals:
            m = r["perturbed"][p]
            cells.append(
                f"{_pct(m['fake_accuracy'])} / {_pct(m['real_accuracy'])} ({t['auc'] - m['auc']:+.3f})"
            )
        at.append(
            f"| {_label(r)} | {_pct(t['fake_accuracy'])} / {_pct(t['real_accuracy'])} | "
            + " | ".join(cells)
            + " |"
        )
    return (
        "\n".join(auc)
        + "\n\nAt the trained threshold (0.5) for the goal perturbations; AUC drop in brackets:\n\n"
        + "\n".join(at)
    )


def plot_robustness(results: list[dict], perturbations: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if "perturbed" in r]
    names = ["clean", *perturbations]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharex=True)
    for r in rows:
        aucs = [r["test"]["auc"]] + [r["perturbed"][p]["auc"] for p in perturbations]
        accs = [r["test"]["accuracy"]] + [r["perturbed"][p]["accuracy"] for p in perturbations]
        style = "-" if r["variant"] in ("channel", "channel+aug") else ":"
        axes[0].plot(names, aucs, style, marker="o", label=_label(r))
        axes[1].plot(names, accs, style, marker="o")
    axes[0].set_ylabel("test ROC AUC")
    axes[1].set_ylabel("test accuracy at 0.5")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle("Same models, perturbed copies of the test photos (perturbed before detection)")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pruning_table(rows: list[dict]) -> str:
    lines = [
        "| backbone | taps kept (forward stops after) | features | val AUC | test AUC | test accuracy % | wild/real called fake % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['taps']} of {r['of']} (`{r['last_tap']}`) | {r['n_features']:,} | "
            f"{_num(r['val']['auc'])} | {_num(r['test']['auc'])} | {_pct(r['test']['accuracy'])} | "
            f"{_pct(1 - r['wild']['real_accuracy'])} |"
        )
    return "\n".join(lines)


def ideas_table(rows: list[dict]) -> str:
    lines = [
        "| idea | features | val AUC | test AUC | test accuracy % | wild/real called fake % | "
        "unseen generator: worst AUC | worst fakes caught % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['idea']} | {r['n_features']:,} | {_num(r['val']['auc'])} | {_num(r['test']['auc'])} | "
            f"{_pct(r['test']['accuracy'])} | {_pct(1 - r['wild']['real_accuracy'])} | "
            f"{_num(r['logo_auc_min'])} | {_pct(r['logo_fake_caught_min'])} |"
        )
    return "\n".join(lines)


def goals_table(report: dict) -> str:
    """Issue #4's goals for the model with the best val AUC and for the shipped configuration."""
    raw = [r for r in report["results"] if r["neuron"] == "raw" and r["variant"] != "pixel_cnn"]
    best = max(raw, key=lambda r: r["val"]["auc"])
    models = [best] + [r for r in raw if (r["backbone"], r["variant"]) == SHIPPED and r is not best]

    def logo(r):
        rows = [
            g
            for g in report["generalization"]
            if g["backbone"] == r["backbone"] and g["variant"] == r["variant"].split("+")[0]
        ]
        if not rows:
            return "–"
        worst = min(rows, key=lambda g: g["auc"])
        met = "met" if worst["auc"] >= 0.95 else "missed"
        return (
            f"worst {_num(worst['auc'])}, {worst['train_generator']} -> {worst['test_generator']} "
            f"(trained without augmentation): {met}"
        )

    def perturbed(r, p):
        if p not in r.get("perturbed", {}):
            return "–"
        m, c = r["perturbed"][p], r["test"]
        auc, caught, kept = (
            c["auc"] - m["auc"],
            c["fake_accuracy"] - m["fake_accuracy"],
            c["real_accuracy"] - m["real_accuracy"],
        )
        met = "met" if auc <= 0.02 and caught <= 0.05 and kept <= 0.05 else "missed"
        return (
            f"change: AUC {-auc:+.3f}, fakes caught {-100 * caught:+.1f} points, real kept "
            f"{-100 * kept:+.1f} points: {met}"
        )

    head = (
        "| goal | "
        + " | ".join(
            f"{_label(r)}{' (best val AUC)' if r is best else ' (shipped)'}" for r in models
        )
        + " |"
    )
    lines = [head, "|---" * (len(models) + 1) + "|"]
    lines.append(
        "| test AUC >= 0.99 | "
        + " | ".join(
            f"{_num(r['test']['auc'])}: {'met' if r['test']['auc'] >= 0.99 else 'missed'}"
            for r in models
        )
        + " |"
    )
    lines.append(
        "| leave-one-generator-out AUC >= 0.95 | " + " | ".join(logo(r) for r in models) + " |"
    )
    lines.append(
        "| wild/real <= 5% called fake | "
        + " | ".join(
            f"{_pct(1 - r['wild']['real_accuracy'])}%: {'met' if 1 - r['wild']['real_accuracy'] <= 0.05 else 'missed'}"
            for r in models
        )
        + " |"
    )
    for p in GOAL_PERTURBATIONS:
        lines.append(
            f"| {p}: AUC drop <= 0.02, fakes caught and real kept each drop <= 5 points | "
            + " | ".join(perturbed(r, p) for r in models)
            + " |"
        )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    meta, results = report["meta"], report["results"]
    neuron_rows = [
        r for r in results if r["backbone"] == "facenet" and r["variant"] in ("layer", "channel")
    ]
    neuron = [
        "| variant | neuron output | val AUC | test accuracy % | test AUC | wild/real called fake % |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(neuron_rows, key=lambda r: (r["variant"], r["neuron"])):
        neuron.append(
            f"| {r['variant']} | {r['neuron']} | {_num(r['val']['auc'])} | "
            f"{_pct(r['test']['accuracy'])} | {_num(r['test']['auc'])} | "
            f"{_pct(1 - r['wild']['real_accuracy'])} |"
        )
    cnn = next(r for r in results if r["variant"] == "pixel_cnn")
    log = cnn["training"]
    n = meta["n_per_split"]
    return f"""# Results

Produced by `{meta["command"]}` at commit `{meta["commit"]}` on this repository's code; every
number below comes from that run (`{meta["out"]}/results.json`; the stages it caches there
are listed in the script's docstring).

Data: `../shared/faces` (FFHQ real vs StyleGAN 1 / StyleGAN 2 (thispersondoesnotexist) /
an unknown StyleGAN model, 128 to 1024 px; see its README). Train on `train` ({n["train"]:,} images),
choose on `val` ({n["val"]:,}), report on `test` ({n["test"]:,}) and on `wild/real` ({n["wild"]:,} UTKFace photos from another
source, never trained on and never used to choose anything). Every image goes through the same
MTCNN detection + 5-point alignment that a photo in the wild takes (MTCNN over all
{meta["n_images"]} images: {meta["mtcnn_seconds"]:.0f} s); an image with no face found counts as
predicted real. Classifier for every coverage or embedding row: standardize, linear SVM with C
chosen by 5-fold cross-validated AUC on `train` only, Platt calibration on out-of-fold scores;
threshold 0.5 on P(fake).

## Goals of issue #4

{goals_table(report)}

## The paper's Table 4, ours

{headline_table(results)}

The paper (Table 4, its own data: real CelebA-HQ/FFHQ vs four GANs) reports FakeSpotter
accuracy of 84.78% with FaceNet, 80.25% with OpenFace and 78.59% with VGG-Face, against
59–70% for fine-tuned Xception / VGG19 / ResNet50. OpenFace and VGG-Face weights are not
available here; dlib ResNet-29 and SFace stand in for them.

**Pixel CNN** (`benchmarks/pixel_cnn.py`): the paper's "deeply trained CNN" baseline, trained from
scratch on the SFace-aligned 112 px crops, since ImageNet-pretrained Xception/ResNet weights are
not available here: 5 stages of 3x3 conv + BatchNorm + ReLU (16 to 256 channels), global average
pooling, one linear output; {log["n_params"]:,} weights; AdamW, cosine schedule, flips and shifts.
It trained for {len(log["history"])} epochs in {log["train_seconds"] / 60:.1f} minutes of wall clock on
{log.get("threads", "?")} CPU thread(s) (budget {log["minutes_budget"]:g} minutes); the epoch with the best validation AUC ({log["best_val_auc"]:.3f},
epoch {log["best_epoch"]}) is kept. **channel + augmented training**: the same `channel` features
and thresholds, trained on every training image plus one perturbed copy of it (a random one of
none / JPEG q30-95 / blur sigma 0.3-2 / noise sigma 1-8 / down-and-up resize 0.4-0.9, drawn
per image with a fixed seed).

## Raw vs post-activation neuron outputs (facenet)

{chr(10).join(neuron)}

"Raw" counts each Conv2d/Linear output as it leaves the layer; "activation" counts the output
of the nonlinearity that follows it (after BatchNorm and ReLU/PReLU, or after the residual add).

## Generalization to unseen generators

Train on the real faces plus ONE generator's fakes (train split), test on the test split's
real faces plus the fakes of each generator never seen in training.

{generalization_table(report["generalization"])}

## Robustness: perturbed test photos

Each test photo is perturbed *before* detection and alignment (`fakespotter.evaluation.perturb`,
the same code as `fakespotter evaluate --perturb`; noise seeded per image), and the models above,
trained on clean photos (or with augmentation where named), score the copies. Test ROC AUC:

{robustness_tables(results, meta["perturbations"])}

![AUC and accuracy per perturbation](results/robustness.png)

## Beyond the paper

Each idea on the same split, against the paper's `layer` variant (first row); SFace unless a
backbone is named. "Unseen generator": trained on real + StyleGAN1 fakes only, tested on the
test split's real faces + each other generator (the hardest direction above); the worse of
the two is shown. Not run, for cost: k-multisection per channel (44k features) and the
three-backbone fusion; an earlier run of both ran out of this machine's 24 GiB.

{ideas_table(report["beyond_paper"])}

## Keeping only the valuable layers (the paper's future work)

The same `channel` classifier trained on the counts of the first k taps only; a pruned extractor
stops the forward pass after tap k (`FakeSpotter(taps=...)`, see `docs/speed.md` for its speed).

{pruning_table(report["pruning"])}

## Cost

Per-layer thresholds and features come from one hooked forward pass each (see
`benchmarks/speed.py` for per-image timings); fitting the SVM (Gram matrix, 6 values of C x
5 folds, final fit, calibration) took the `fit_seconds` in `results.json`.
"""


if __name__ == "__main__":
    main()

"""Reproduce the paper's experiment on ../shared/faces and write docs/results.md.

    python benchmarks/reproduce.py                 # every stage, cached under out/
    python benchmarks/reproduce.py --limit 200     # a quick smoke run on 200 images per split/class

Stages (each cached in out/reproduce/, so a rerun only does what is missing):
1. landmarks: MTCNN on every image of train/val/test/wild; the largest face's 5 landmarks.
2. features, per backbone: crops aligned to the backbone's template from those landmarks;
   per-layer thresholds from the train split only (paper Eq. 1); one hooked forward pass per
   image gives the channel counts (Eq. 2 per channel), the layer counts (their sums per layer)
   and the final embedding.
3. table: for each backbone x variant, the FakeSpotter classifier (standardize, linear SVM with
   C by 5-fold CV on train, Platt calibration) fit on train, measured on test and on wild/real.
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
from tqdm import tqdm

from fakespotter.backbones import get_backbone
from fakespotter.coverage import NeuronCoverage
from fakespotter.detector import FakeSpotter
from fakespotter.faces import load_image, warp_face
from fakespotter.faces.pipeline import load_detector
from fakespotter.metrics import evaluate_scores

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
OUT = ROOT / "out" / "reproduce"
SPLITS = ("train", "val", "test", "wild")
BACKBONES = ("facenet", "dlib", "sface")
VARIANTS = ("layer", "channel", "embedding")
# The paper's Table 4 (accuracy, %): FakeSpotter with each backbone on its own data.
PAPER = {"facenet": 84.78, "openface": 80.25, "vgg-face": 78.59}


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


def stage_landmarks(rows: list[dict], path: Path) -> np.ndarray:
    if path.exists():
        cached = np.load(path)
        if list(cached["files"]) == [r["file"] for r in rows]:
            return cached["landmarks"]
    detector = load_detector()
    landmarks = np.full((len(rows), 5, 2), np.nan)
    start = time.perf_counter()
    for i, r in enumerate(tqdm(rows, desc="MTCNN", unit="img")):
        faces = detector.detect(load_image(FACES / r["file"]))
        if faces:
            landmarks[i] = faces[0].landmarks
    seconds = time.perf_counter() - start
    np.savez(path, files=np.array([r["file"] for r in rows]), landmarks=landmarks,
             seconds=seconds)
    return landmarks


def stage_features(rows, landmarks, name: str, path: Path, neuron: str = "raw") -> dict:
    if path.exists():
        return dict(np.load(path))
    bb = get_backbone(name).load()
    have = ~np.isnan(landmarks[:, 0, 0])
    crops = np.zeros((len(rows), bb.input_size, bb.input_size, 3), np.uint8)
    for i in tqdm(np.flatnonzero(have), desc=f"align {name}", unit="img"):
        crops[i] = warp_face(load_image(FACES / rows[i]["file"]), landmarks[i],
                             bb.alignment_template, bb.input_size)
    split = np.array([r["split"] for r in rows])
    taps = bb.taps()
    coverage = NeuronCoverage(bb.model, taps, "channel", neuron, bb.activations)
    train = np.flatnonzero((split == "train") & have)
    batch = 32
    start = time.perf_counter()
    coverage.fit(bb.preprocess(crops[train[i:i + batch]])
                 for i in tqdm(range(0, len(train), batch), desc=f"thresholds {name}"))
    threshold_seconds = time.perf_counter() - start
    channel, embedding = [], []
    start = time.perf_counter()
    for i in tqdm(range(0, len(rows), batch), desc=f"coverage {name}"):
        f, out = coverage.transform(bb.preprocess(crops[i:i + batch]), return_output=True)
        channel.append(f)
        embedding.append(out.numpy())
    channel = np.concatenate(channel)
    layer = np.stack([channel[:, s].sum(1) for s in coverage.feature_slices.values()], 1)
    result = dict(channel=channel, layer=layer, embedding=np.concatenate(embedding),
                  thresholds=coverage.thresholds_, have=have,
                  taps=np.array([t.name for t in taps]),
                  threshold_seconds=threshold_seconds,
                  extract_seconds=time.perf_counter() - start)
    np.savez(path, **result)
    return result


def fit_and_measure(name, variant, feats, rows) -> dict:
    split = np.array([r["split"] for r in rows])
    y = np.array([int(r["label"] == "fake") for r in rows])
    have = feats["have"].astype(bool)
    F = feats[variant]
    train = (split == "train") & have
    det = FakeSpotter(backbone=name, variant=variant)
    det.thresholds_ = feats["thresholds"]
    start = time.perf_counter()
    det.fit_features(F[train], y[train])
    fit_seconds = time.perf_counter() - start
    result = {"backbone": name, "variant": variant, "n_features": int(F.shape[1]),
              "C": det.C_, "cv_auc": det.cv_auc_, "fit_seconds": round(fit_seconds, 1),
              "train_accuracy": float((det.predict(features=F[train]) == y[train]).mean())}
    for s in ("val", "test", "wild"):
        rows_s = split == s
        # an image with no face found counts as predicted real (score 0)
        p = np.zeros(rows_s.sum())
        ok = have[rows_s]
        if ok.any():
            p[ok] = det.predict_proba(features=F[rows_s][ok])[:, 1]
        m = evaluate_scores(y[rows_s], p)
        m["n_no_face"] = int((~ok).sum())
        result[s] = m
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="images per split and class (smoke run)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--neuron-study", default="facenet",
                        help="backbone on which raw vs activation neuron outputs are compared")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not (FACES / "manifest.csv").exists():
        sys.exit(f"reproduce: no face data at {FACES}")
    torch.manual_seed(0)
    out = args.out / (f"limit{args.limit}" if args.limit else "full")
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(args.limit)
    landmarks = stage_landmarks(rows, out / "landmarks.npz")
    results = []
    for name in args.backbones:
        feats = stage_features(rows, landmarks, name, out / f"features_{name}.npz")
        for variant in VARIANTS:
            r = fit_and_measure(name, variant, feats, rows)
            r["neuron"] = "raw"
            r["threshold_seconds"] = float(feats["threshold_seconds"])
            r["extract_seconds"] = float(feats["extract_seconds"])
            results.append(r)
            print(json.dumps({k: r[k] for k in ("backbone", "variant", "C", "cv_auc")}
                             | {"test_auc": r["test"]["auc"], "test_acc": r["test"]["accuracy"],
                                "wild_fp": 1 - r["wild"]["real_accuracy"]}), flush=True)
    if args.neuron_study in args.backbones:
        feats = stage_features(rows, landmarks, args.neuron_study,
                               out / f"features_{args.neuron_study}_activation.npz", "activation")
        for variant in ("layer", "channel"):
            r = fit_and_measure(args.neuron_study, variant, feats, rows)
            r["neuron"] = "activation"
            results.append(r)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    meta = {"command": "python benchmarks/reproduce.py" + (f" --limit {args.limit}" if args.limit else ""),
            "commit": commit, "n_images": len(rows),
            "mtcnn_seconds": float(np.load(out / "landmarks.npz")["seconds"])}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()

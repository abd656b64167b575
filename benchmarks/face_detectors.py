"""Face detectors compared (issue #15): how often each finds the face, how fast, and what its
crops do for the detector downstream.

    python -m benchmarks.face_detectors [--limit N] [--timing 300] [--markdown docs/face_detectors.md]

Every registered face detector runs inside the CLI's own ``FaceCropper`` (SFace's template,
``min_face_fraction`` as `detect` uses it, quarter-turn retries included), on every photo of
../shared/faces (train, val, test and wild/real):

* found: the share of photos where it finds a face, per split and class;
* ms/photo: the cropper's wall time on --timing photos spread over every split, the detectors
  interleaved photo by photo (same disk cache, same load), median and mean;
* downstream: SFace channel counts of its crops (thresholds from its own train crops) and a
  linear SVM (C by 5-fold CV, as `train` does) on train: val AUC (the choice) and test AUC
  (for reading); a photo without a face scores 0.5 (``scores_with_missing``), as in reproduce;
* landmarks against MTCNN's: the median distance over the photos both found, as a share of the
  distance between the eyes.

Rule, written before the first full run: the default face detector is the fastest one (mean
ms/photo) whose wild/real finding rate and val AUC are both at least MTCNN's; MTCNN if none is.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import reproduce
from fakespotter.backbones import get_backbone
from fakespotter.detector import FakeSpotter
from fakespotter.faces import load_image
from fakespotter.faces.pipeline import FaceCropper, largest_face
from fakespotter.faces.registry import FACE_DETECTORS
from fakespotter.metrics import evaluate_scores
from fakespotter.training import scores_with_missing

SVM_CS = (1e-5, 1e-4, 1e-3)  # detection_v2.py's grid (today's models land at 1e-4)
GROUPS = (("train", None), ("val", None), ("test", None), ("wild", "real"))


def cropper(name: str) -> FaceCropper:
    sface = get_backbone("sface")
    return FaceCropper(sface.input_size, sface.alignment_template, detector=name, progress=False)


def _detection_v2_cache(limit) -> Path:
    """detection_v2.py's cache: MTCNN's landmarks and SFace counts of the same photos."""
    return reproduce.ROOT / "out" / "detection_v2" / (f"limit{limit}" if limit else "full")


def landmarks_of(name: str, rows: list[dict], out: Path, limit) -> np.ndarray:
    """The largest face's landmarks per photo (NaN: none), cached. MTCNN's are the ones
    detection_v2.py caches (the same cropper on the same photos): reused when present."""
    path = out / f"landmarks_{name}.npz"
    files = [r["file"] for r in rows]
    shared = _detection_v2_cache(limit)
    if not path.exists() and name == "mtcnn" and (shared / "landmarks.npz").exists():
        if list(np.load(shared / "landmarks.npz")["files"]) == files:
            shutil.copy(shared / "landmarks.npz", path)
    if path.exists() and list(np.load(path)["files"]) == files:
        return np.load(path)["landmarks"]
    find = cropper(name)
    landmarks = np.full((len(rows), 5, 2), np.nan)
    for i, r in enumerate(tqdm(rows, desc=f"faces {name}", unit="img")):
        faces = find(load_image(reproduce.FACES / r["file"]))
        if faces:
            landmarks[i] = largest_face(faces).landmarks
    np.savez(path, files=np.array(files), landmarks=landmarks)
    return landmarks


def features_of(name: str, rows, landmarks, out: Path, limit) -> dict:
    path = out / f"features_sface_{name}.npz"
    shared = _detection_v2_cache(limit)
    if not path.exists() and name == "mtcnn" and (shared / "features_sface.npz").exists():
        shutil.copy(shared / "features_sface.npz", path)  # from the same landmarks
    return reproduce.stage_features(rows, landmarks, "sface", path)


def timing(rows: list[dict], n: int) -> dict[str, dict]:
    """ms/photo of each detector's cropper on ``n`` photos spread over ``rows``: speed.py's
    detectors table (interleaved photo by photo)."""
    from benchmarks.speed import detector_table

    picks = np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)
    return detector_table([reproduce.FACES / rows[i]["file"] for i in picks])


def measure(name: str, rows, study, out: Path, limit) -> dict:
    landmarks = landmarks_of(name, rows, out, limit)
    have = ~np.isnan(landmarks[:, 0, 0])
    split, y = study.split, study.y
    found = {}
    for group, label in GROUPS:
        for lab in (label,) if label else ("real", "fake"):
            rows_ = (split == group) & (y == int(lab == "fake"))
            found[f"{group}/{lab}"] = float(have[rows_].mean()) if rows_.any() else None
    feats = features_of(name, rows, landmarks, out, limit)
    F = feats["channel"].astype(np.float32)
    train = (split == "train") & have
    det = FakeSpotter(backbone="sface", variant="channel", Cs=SVM_CS).fit_features(
        F[train], y[train]
    )
    p = scores_with_missing(det.predict_proba(features=F[have])[:, 1], have)
    result = {
        "detector": name,
        "found": found,
        "found_all": float(have.mean()),
        "val_auc": evaluate_scores(y[split == "val"], p[split == "val"])["auc"],
        "test_auc": evaluate_scores(y[split == "test"], p[split == "test"])["auc"],
    }
    return result | {"landmarks": landmarks}


def landmark_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    both = ~np.isnan(a[:, 0, 0]) & ~np.isnan(b[:, 0, 0])
    eyes = np.linalg.norm(b[both, 0] - b[both, 1], axis=1)
    d = np.linalg.norm(a[both] - b[both], axis=2) / eyes[:, None]  # photos x 5 points
    return {
        "photos": int(both.sum()),
        "median_of_eye_distance": float(np.median(d)),
        "p90_of_eye_distance": float(np.percentile(d, 90)),
        "eyes_median": float(np.median(d[:, :2])),
    }


def choose(results: list[dict]) -> str:
    """The rule in the docstring."""
    base = next(r for r in results if r["detector"] == "mtcnn")
    ok = [
        r
        for r in results
        if r["found"]["wild/real"] >= base["found"]["wild/real"] and r["val_auc"] >= base["val_auc"]
    ]
    return min(ok, key=lambda r: r["ms_per_photo_mean"])["detector"] if ok else "mtcnn"


def markdown(results: list[dict], chosen: str, limit, timing_n: int) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    keys = list(results[0]["found"])
    lines = [
        "# Face detectors",
        "",
        "Made by `python -m benchmarks.face_detectors"
        + (f" --limit {limit}" if limit else "")
        + f" --timing {timing_n}`; the protocol and the rule are in its docstring. Found: share "
        "of photos with a face, through the CLI's own cropper. ms/photo: that cropper, "
        "detectors interleaved photo by photo on the same photos (2 cores). Val/test AUC: "
        "SFace channel counts of that detector's crops, linear SVM, no augmentation.",
        "",
        "| detector | " + " | ".join(f"found {k}" for k in keys) + " | ms/photo (median, mean) "
        "| val AUC | test AUC | landmarks vs MTCNN (median, p90; share of eye distance) |",
        "|---|" + "---|" * (len(keys) + 4),
    ]
    for r in results:
        agree = r.get("agreement")
        lines.append(
            f"| {r['detector']}{' **(chosen)**' if r['detector'] == chosen else ''} | "
            + " | ".join(pct(r["found"][k]) for k in keys)
            + f" | {r['ms_per_photo']:.1f}, {r['ms_per_photo_mean']:.1f} | {r['val_auc']:.4f} | "
            f"{r['test_auc']:.4f} | "
            + (
                f"{agree['median_of_eye_distance']:.3f}, {agree['p90_of_eye_distance']:.3f}"
                if agree
                else "-"
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="photos per split and class")
    parser.add_argument("--timing", type=int, default=300, help="photos timed per detector")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    rows = reproduce.read_manifest(args.limit)
    study = reproduce.Study(rows)
    out = (
        reproduce.ROOT / "out" / "face_detectors" / (f"limit{args.limit}" if args.limit else "full")
    )
    out.mkdir(parents=True, exist_ok=True)
    names = list(FACE_DETECTORS)
    speed = timing(rows, args.timing)
    results = [
        measure(name, rows, study, out, args.limit)
        | {k: v for k, v in speed[name].items() if k != "found_rate"}  # found: every photo's
        for name in names
    ]
    base = next(r for r in results if r["detector"] == "mtcnn")["landmarks"]
    for r in results:
        lm = r.pop("landmarks")
        if r["detector"] != "mtcnn":
            r["agreement"] = landmark_agreement(lm, base)
    chosen = choose(results)
    (out / "results.json").write_text(json.dumps({"results": results, "chosen": chosen}, indent=2))
    text = markdown(results, chosen, args.limit, args.timing)
    print(text)
    print(json.dumps({"results": results, "chosen": chosen}, indent=2))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

"""Which face detector the shipped model should use, decided on equal terms (issue #29, item 1).

docs/face_detectors.md kept MTCNN on SFace `channel` models; this compares the *shipped recipe*
trained on each detector's own crops. Train the candidate first (same recipe, same photos,
only the face detector differs; 1-2 hours here):

    python -m benchmarks.train_default --wide-real \\
        --recipe "--backbone sface --variant kmultisection-channel --neuron raw --augment --face-detector yunet-onet" \\
        --output out/detector_choice/yunet-onet.safetensors
    python -m benchmarks.detector_choice --candidate out/detector_choice/yunet-onet.safetensors

The baseline is the shipped model (MTCNN). Each model scores ``val`` through its own face
detector (a photo without a face scores 0.5, as in evaluation); results go to
out/detector_choice/choice.json.

Rule, written before the candidate was trained: the candidate's detector replaces MTCNN when
(a) its val AUC is at least MTCNN's minus twice the spread of the difference (the standard
deviation of the paired AUC difference over 200 bootstrap resamples of the val photos: a
difference within noise is a tie, and a tie goes to the faster detector), and (b) it finds a
face in at least as many val photos as MTCNN, less 0.5 points. Test and the held-out real
halves are measured only after the rule has spoken, for reading.

Added after the first run (2026-12-08), and said so in docs/face_detectors.md: (c) a candidate
that passes (a) and (b) must also keep the goals the shipped model already meets, measured
the way their issues measure them; ``--goals FILE`` gives them (a JSON object, goal -> met).
YuNet + O-Net passed (a) and (b) and failed (c): after `update` with 100 StyleGAN1 faces it
caught 82.3% of them (issue #28's goal: 85%; MTCNN's model 86.1%), by
``python -m benchmarks.teach curve`` on each model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
OUT = ROOT / "out" / "detector_choice"
RESAMPLES = 200
SPREADS = 2.0  # a val AUC within this many standard deviations of the difference is a tie
FOUND_SLACK = 0.005


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def photo_scores(model: Path, real: list[Path], fake: list[Path]) -> dict:
    """Per-photo P(fake) through the model's own face detector, in the order real + fake."""
    from fakespotter.persistence import load_model
    from fakespotter.training import largest_faces, scores_with_missing

    det = load_model(model)
    files = real + fake
    faces = largest_faces(det.face_cropper(False), files, progress=True, desc=model.stem)
    found = np.array([p in set(faces.paths) for p in files])
    p = det.predict_proba(faces.crops)[:, 1] if len(faces.crops) else np.zeros(0)
    by_path = dict(zip(faces.paths, p, strict=True))
    ordered = np.array([by_path[f] for f in files if f in by_path])
    return {
        "detector": det.face_detector,
        "p_fake": scores_with_missing(ordered, found),
        "found": found,
    }


def paired_spread(y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Standard deviation of AUC(b) - AUC(a) over bootstrap resamples of the same photos."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(RESAMPLES):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) < 2:
            continue
        diffs.append(roc_auc_score(y[i], b[i]) - roc_auc_score(y[i], a[i]))
    return float(np.std(diffs))


def decide(y, base: dict, cand: dict, goals: dict[str, bool] | None = None) -> dict:
    """The rule of the module docstring: (a) val AUC within noise or better, (b) finds as
    many faces, (c) every standing goal in ``goals`` still met (None: not measured yet)."""
    from sklearn.metrics import roc_auc_score

    auc_base, auc_cand = roc_auc_score(y, base["p_fake"]), roc_auc_score(y, cand["p_fake"])
    spread = paired_spread(y, base["p_fake"], cand["p_fake"])
    found_base, found_cand = base["found"].mean(), cand["found"].mean()
    auc_ok = auc_cand >= auc_base - SPREADS * spread
    found_ok = found_cand >= found_base - FOUND_SLACK
    return {
        "val_auc": {base["detector"]: auc_base, cand["detector"]: auc_cand},
        "auc_difference_spread": spread,
        "val_found": {base["detector"]: float(found_base), cand["detector"]: float(found_cand)},
        "auc_within_noise_or_better": bool(auc_ok),
        "finds_as_many": bool(found_ok),
        "standing_goals": goals,
        "chosen": cand["detector"]
        if auc_ok and found_ok and all((goals or {}).values())
        else base["detector"],
    }


def reading(model: Path) -> dict:
    """After the decision: test AUC and the held-out real halves called fake, for reading."""
    from sklearn.metrics import roc_auc_score

    from fakespotter.persistence import load_model

    out = {}
    real, fake = images(FACES / "test" / "real"), images(FACES / "test" / "fake")
    s = photo_scores(model, real, fake)
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    out["test_auc"] = float(roc_auc_score(y, s["p_fake"]))
    threshold = load_model(model).threshold_
    real = s["p_fake"][y == 0]
    out["test_real_called_fake"] = float(np.mean(real >= threshold))
    out["test_fake_caught"] = float(np.mean(s["p_fake"][y == 1] >= threshold))
    for source in ("wild", "studio"):
        files = images(FACES / source / "real")
        second = files[len(files) // 2 :]
        h = photo_scores(model, second, [])
        out[f"{source}_second_half_called_fake"] = float(np.mean(h["p_fake"] >= threshold))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidate", type=Path, required=True, help="the model to compare")
    parser.add_argument("--baseline", type=Path, default=None, help="[the shipped model]")
    parser.add_argument(
        "--goals",
        type=Path,
        default=None,
        help="JSON: the shipped model's goals -> met by the candidate",
    )
    args = parser.parse_args()
    from fakespotter.persistence import default_model_path

    baseline = args.baseline or default_model_path()
    real, fake = images(FACES / "val" / "real"), images(FACES / "val" / "fake")
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    base = photo_scores(baseline, real, fake)
    cand = photo_scores(args.candidate, real, fake)
    goals = json.loads(args.goals.read_text()) if args.goals else None
    result = decide(y, base, cand, goals)
    print(json.dumps(result, indent=2), flush=True)
    result["reading"] = {str(m): reading(m) for m in (baseline, args.candidate)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "choice.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["reading"], indent=2))
    print(f"wrote {OUT / 'choice.json'}")


if __name__ == "__main__":
    main()

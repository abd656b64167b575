"""How many faces of a new generator it takes to catch it: a learning curve, per held-out one.

    python benchmarks/learning_curve.py [--limit N] [--markdown docs/learning_curve.md]

Simulates a family the model never saw with the generators of ../shared/faces: hold one out
of training entirely, then add k = 0, 10, 25, 50, 100, 200 of its *training* faces (drawn at
random) and refit the classifier on stored features (``fit_features``: scaler, linear SVM with
the shipped model's C, calibration; the per-layer thresholds stay those of the full training
set, the same simplification as reproduce.py's leave-one-generator-out table). Measured on its *test*
faces against the test real photos (AUC, share caught at the operating threshold chosen on
val photos of the seen generators for 1% false alarms) and on wild/real (false alarms).

SFace channel features, MTCNN-aligned like photos in the wild; the stages are reproduce.py's,
cached under out/learning_curve/. Refitting the classifier on stored features takes seconds,
against the minutes of a full `fakespotter train`: the cheap update is this refit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402  (its stages: landmarks and features of every image)

from fakespotter.detector import FakeSpotter  # noqa: E402
from fakespotter.metrics import evaluate_scores  # noqa: E402
from fakespotter.persistence import default_model_path, load_model  # noqa: E402
from fakespotter.training import choose_operating_point  # noqa: E402

KS = (0, 10, 25, 50, 100, 200)
DRAWS = 1  # random draws of the k added faces (each refit takes a few seconds to a minute)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per split and class")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    out = (
        reproduce.ROOT / "out" / "learning_curve" / (f"limit{args.limit}" if args.limit else "full")
    )
    out.mkdir(parents=True, exist_ok=True)
    rows = reproduce.read_manifest(args.limit)
    study = reproduce.Study(rows)
    landmarks = reproduce.stage_landmarks(rows, out / "landmarks.npz")
    f = reproduce.stage_features(rows, landmarks, "sface", out / "features_sface.npz")
    F, have = f["channel"], f["have"].astype(bool)
    split, y, gen = study.split, study.y, study.gen
    rng = np.random.default_rng(0)
    C = load_model(default_model_path()).C_  # the shipped model's, not searched again per fit
    curves = []
    for held in sorted(set(gen[(y == 1) & (split == "train")])):
        seen_train = (split == "train") & have & ((y == 0) | (gen != held))
        pool = np.flatnonzero((split == "train") & have & (gen == held))
        val = (split == "val") & have & ((y == 0) | (gen != held))
        test = (split == "test") & ((y == 0) | (gen == held))
        wild = split == "wild"
        if not (y[seen_train] == 1).any() or not (y[test] == 1).any():
            continue  # a --limit run may hold no other generator, or none of its test faces
        for k in KS:
            if k > len(pool):
                continue
            for draw in range(DRAWS if k else 1):
                extra = rng.choice(pool, size=k, replace=False) if k else np.zeros(0, int)
                idx = np.r_[np.flatnonzero(seen_train), extra]
                det = FakeSpotter(backbone="sface", variant="channel", Cs=(C,))
                det.fit_features(F[idx], y[idx])
                point = choose_operating_point(study.scores(det, F[val], have[val]), y[val])
                t = point["threshold"]
                m = evaluate_scores(y[test], study.scores(det, F[test], have[test]), t)
                w = evaluate_scores(y[wild], study.scores(det, F[wild], have[wild]), t)
                curves.append(
                    {
                        "held_out": held,
                        "k": int(k),
                        "draw": draw,
                        "threshold": t,
                        "auc": m["auc"],
                        "caught": m["fake_accuracy"],
                        "test_real_called_fake": 1 - m["real_accuracy"],
                        "wild_called_fake": 1 - w["real_accuracy"],
                    }
                )
                print(json.dumps(curves[-1]), flush=True)
    (out / "curves.json").write_text(json.dumps(curves, indent=2))
    summary = {}
    for c in curves:
        summary.setdefault((c["held_out"], c["k"]), []).append(c)
    lines = [
        "# Catching a generator it never saw, from a few of its faces",
        "",
        "Made by `python benchmarks/learning_curve.py"
        + (f" --limit {args.limit}" if args.limit else "")
        + " --markdown docs/learning_curve.md --plot docs/learning_curve.png` "
        "(SFace channel; see the script's docstring for the protocol). Means over "
        f"{DRAWS} random draw(s) of the k added faces.",
        "",
        "| held-out generator | k added | test AUC | caught at the 1%-false-alarm threshold | test real called fake | wild/real called fake |",
        "|---|---|---|---|---|---|",
    ]
    for (held, k), cs in sorted(summary.items()):
        mean = {
            key: float(np.mean([c[key] for c in cs]))
            for key in ("auc", "caught", "test_real_called_fake", "wild_called_fake")
        }
        lines.append(
            f"| {held} | {k} | {mean['auc']:.3f} | {100 * mean['caught']:.1f}% | "
            f"{100 * mean['test_real_called_fake']:.1f}% | {100 * mean['wild_called_fake']:.1f}% |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.plot:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.4))
        ax_auc, ax_caught = fig.subplots(1, 2)
        for held in sorted({c["held_out"] for c in curves}):
            ks = sorted({k for h, k in summary if h == held})
            for ax, key in ((ax_auc, "auc"), (ax_caught, "caught")):
                ax.plot(
                    ks,
                    [np.mean([c[key] for c in summary[(held, k)]]) for k in ks],
                    "o-",
                    label=held,
                )
        ax_auc.set(xlabel="faces of the new generator added", ylabel="test AUC")
        ax_caught.set(xlabel="faces of the new generator added", ylabel="share caught (1% FPR)")
        ax_caught.legend(fontsize="small")
        for ax in (ax_auc, ax_caught):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()

"""How many faces of a new generator it takes to catch it: a learning curve, per held-out one.

    python -m benchmarks.learning_curve [--limit N] [--markdown docs/learning_curve.md]

Simulates a family the model never saw with the generators of ../shared/faces: hold one out
of training entirely, then add k = 0, 10, 25, 50, 100, 200 of its *training* faces (drawn at
random) and refit the classifier on stored features (``fit_features``: scaler, linear SVM with
the shipped model's C, calibration; the per-layer thresholds stay those of the full training
set, the same simplification as reproduce.py's leave-one-generator-out table). Measured on its *test*
faces against the test real photos (AUC, share caught at the operating threshold chosen on
val photos of the seen generators for 1% false alarms) and on wild/real (false alarms).

SFace channel features, MTCNN-aligned like photos in the wild; the stages are reproduce.py's,
cached under out/learning_curve/. Refitting the classifier on stored features is what
`fakespotter update` does (the cheap update). At k in FULL_KS the script also runs the full
retrain beside it: per-layer thresholds fitted again on exactly the faces of that fit (so at
k = 0 nothing of the held-out generator was seen at all), every face counted again, then the
same classifier fit; the table sets the two side by side with the seconds each took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import reproduce  # its stages: landmarks and features of every image
from fakespotter.backbones import get_backbone
from fakespotter.coverage import NeuronCoverage
from fakespotter.detector import FakeSpotter
from fakespotter.metrics import evaluate_scores
from fakespotter.operating_point import choose_operating_point
from fakespotter.persistence import default_model_path, load_model

KS = (0, 10, 25, 50, 100, 200)
FULL_KS = (0, 50, 200)  # where the full retrain runs beside the cheap update (minutes each)
DRAWS = 1  # random draws of the k added faces (each refit takes a few seconds to a minute)


def measure(det, F, y, have, val, test, wild, study) -> dict:
    """Test AUC and share caught at the threshold chosen on val (1% false alarms); false
    alarms on test reals and wild/real at it."""
    point = choose_operating_point(study.scores(det, F[val], have[val]), y[val])
    t = point["threshold"]
    m = evaluate_scores(y[test], study.scores(det, F[test], have[test]), t)
    w = evaluate_scores(y[wild], study.scores(det, F[wild], have[wild]), t)
    return {
        "threshold": t,
        "auc": m["auc"],
        "caught": m["fake_accuracy"],
        "test_real_called_fake": 1 - m["real_accuracy"],
        "wild_called_fake": 1 - w["real_accuracy"],
    }


def recount(bb, crops: np.ndarray, fit_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The full retrain's features: thresholds fitted on ``crops[fit_rows]`` alone, then
    channel counts of ``crops[rows]`` (N x F, rows in the order given)."""
    coverage = NeuronCoverage(bb.model, bb.taps(), "channel", "raw", bb.activations)
    batch = 32
    coverage.fit(
        bb.preprocess(crops[fit_rows[i : i + batch]]) for i in range(0, len(fit_rows), batch)
    )
    return reproduce.extract(coverage, bb, crops[rows], "recount")["channel"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--limit", type=int, default=None, help="images per split, class and generator (smoke run)"
    )
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    out = (
        reproduce.ROOT / "out" / "learning_curve" / (f"limit{args.limit}" if args.limit else "full")
    )
    out.mkdir(parents=True, exist_ok=True)
    rows = reproduce.read_manifest(None)
    if args.limit:  # per generator, so that a smoke run still holds each one out
        seen: dict = {}
        kept = []
        for r in rows:
            key = (r["split"], r["label"], r["generator"])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= args.limit:
                kept.append(r)
        rows = kept
    study = reproduce.Study(rows)
    landmarks = reproduce.stage_landmarks(rows, out / "landmarks.npz")
    f = reproduce.stage_features(rows, landmarks, "sface", out / "features_sface.npz")
    F, have = f["channel"], f["have"].astype(bool)
    split, y, gen = study.split, study.y, study.gen
    rng = np.random.default_rng(0)
    C = load_model(default_model_path()).C_  # the shipped model's, not searched again per fit
    bb, crops = None, None  # loaded for the first full retrain
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
                start = time.perf_counter()
                det = FakeSpotter(backbone="sface", variant="channel", Cs=(C,))
                det.fit_features(F[idx], y[idx])
                seconds = time.perf_counter() - start
                curves.append(
                    {
                        "held_out": held,
                        "k": int(k),
                        "draw": draw,
                        "how": "update",
                        "seconds": seconds,
                        **measure(det, F, y, have, val, test, wild, study),
                    }
                )
                print(json.dumps(curves[-1]), flush=True)
                if k not in FULL_KS or draw:
                    continue
                if bb is None:
                    bb = get_backbone("sface").load()
                    crops = reproduce.align_all(rows, landmarks, bb)
                start = time.perf_counter()
                needed = np.flatnonzero(val | test | wild)  # what measure() reads
                F_full = np.zeros_like(F)
                order = np.r_[idx, needed]
                F_full[order] = recount(bb, crops, idx, order)
                det = FakeSpotter(backbone="sface", variant="channel", Cs=(C,))
                det.fit_features(F_full[idx], y[idx])
                curves.append(
                    {
                        "held_out": held,
                        "k": int(k),
                        "draw": draw,
                        "how": "full",
                        "seconds": time.perf_counter() - start,
                        **measure(det, F_full, y, have, val, test, wild, study),
                    }
                )
                print(json.dumps(curves[-1]), flush=True)
    (out / "curves.json").write_text(json.dumps(curves, indent=2))
    summary: dict = {}
    for c in curves:
        summary.setdefault((c["held_out"], c["k"], c["how"]), []).append(c)
    keys = ("auc", "caught", "test_real_called_fake", "wild_called_fake", "seconds")

    def mean(held, k, how) -> dict | None:
        cs = summary.get((held, k, how))
        return None if cs is None else {key: float(np.mean([c[key] for c in cs])) for key in keys}

    def cells(m: dict | None) -> str:
        if m is None:
            return "| | | | | "
        return (
            f"| {m['auc']:.3f} | {100 * m['caught']:.1f}% | "
            f"{100 * m['test_real_called_fake']:.1f}% | {100 * m['wild_called_fake']:.1f}% | "
            f"{m['seconds']:.0f} s "
        )

    lines = [
        "# Catching a generator it never saw, from a few of its faces",
        "",
        "Made by `python -m benchmarks.learning_curve"
        + (f" --limit {args.limit}" if args.limit else "")
        + " --markdown docs/learning_curve.md --plot docs/learning_curve.png` "
        "(SFace channel; see the script's docstring for the protocol). Means over "
        f"{DRAWS} random draw(s) of the k added faces.",
        "",
        "*update*: the classifier refitted on stored features, thresholds kept from the whole "
        "training pool (what `fakespotter update` does). *full*: thresholds fitted again on "
        "the faces of that fit and every face counted again (a new `fakespotter train`); at "
        "k = 0 it is the only one that never saw the held-out generator. Caught: at the "
        "threshold chosen on val for 1% false alarms; test real and wild/real: called fake "
        "at it; s: seconds the fit took (counting included for full).",
        "",
        "| held-out generator | k added | how | test AUC | caught | test real called fake "
        "| wild/real called fake | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for held, k in sorted({(h, k) for h, k, _ in summary}):
        for how in ("update", "full"):
            m = mean(held, k, how)
            if m is not None:
                lines.append(f"| {held} | {k} | {how} " + cells(m) + "|")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.plot:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.4))
        ax_auc, ax_caught = fig.subplots(1, 2)
        for n, held in enumerate(sorted({c["held_out"] for c in curves})):
            colour = f"C{n}"
            for how, style in (("update", "o-"), ("full", "s--")):
                ks = sorted({k for h, k, w in summary if h == held and w == how})
                for ax, key in ((ax_auc, "auc"), (ax_caught, "caught")):
                    ax.plot(
                        ks,
                        [mean(held, k, how)[key] for k in ks],  # type: ignore[index]
                        style,
                        color=colour,
                        label=f"{held} ({how})",
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

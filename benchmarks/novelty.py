"""How often a model's novelty warning fires, per split, real source and generator, and whether
it carries information: the classifier's error rate on flagged versus unflagged faces.

    python -m benchmarks.novelty [--model M] [--markdown docs/novelty.md]

Runs the model on the largest face of every image of ../shared/faces val, test, wild/real and
studio/real (the same detection and alignment as `fakespotter detect`) and counts the faces
whose novelty distance is above the model's limit. wild/real (UTKFace) and studio/real (CIPLAB)
are reported by half, in sorted file-name order: a model may have trained on the first halves
(benchmarks/train_default.py --wide-real), the second halves are never trained on. The limit is
chosen on val or on held-out training reals, so val's rate is ~1% by construction; test and the
second halves are the honest ones. "Error" is the share of faces the model labels wrongly at its
operating threshold (a real called fake or a fake not called fake). A flag that fires on a real
source's photos as often as on fakes of an unseen generator says nothing;
benchmarks/teach.py novelty measures the references and leave-one-out cases (docs/novelty.md).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from fakespotter.persistence import default_model_path, load_model
from fakespotter.training import largest_faces

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="images per folder (smoke run)")
    args = parser.parse_args()
    det = load_model(args.model or default_model_path())
    if getattr(det, "novelty_threshold_", None) is None:
        raise SystemExit("this model has no novelty signal (train it with this fakespotter)")
    cropper = det.face_cropper()
    with open(FACES / "manifest.csv", newline="") as f:
        group = {
            Path(r["file"]).name: (r["label"], r["generator"] or r["source"])
            for r in csv.DictReader(f)
        }
    rows = []
    for folder in ("val/real", "val/fake", "test/real", "test/fake", "wild/real", "studio/real"):
        listed = sorted(p for p in (FACES / folder).iterdir() if p.suffix.lower() == ".jpg")
        half = {p.name: 1 if i < len(listed) // 2 else 2 for i, p in enumerate(listed)}
        split = folder.split("/")[0]
        files = listed[: args.limit]
        found = largest_faces(cropper, files, progress=True, desc=folder)
        features = det.transform(found.crops)
        novelty = det.novelty(features) if len(found.crops) else np.zeros(0)
        p_fake = det.predict_proba(features=features)[:, 1] if len(found.crops) else np.zeros(0)
        for path, v, p in zip(found.paths, novelty, p_fake, strict=True):
            label, name = group.get(Path(path).name, ("?", "?"))
            part = (
                split if split not in ("wild", "studio") else f"{split} ({half[Path(path).name]})"
            )
            wrong = (p >= det.threshold_) != (label == "fake")
            rows.append(
                {
                    "split": part,
                    "label": label,
                    "group": name,
                    "novelty": float(v),
                    "wrong": bool(wrong),
                }
            )
    limit = det.novelty_threshold_
    table: dict = {}
    for r in rows:
        for key in ((r["split"], r["label"], "all"), (r["split"], r["label"], r["group"])):
            table.setdefault(key, []).append((r["novelty"] > limit, r["wrong"]))
    lines = [
        "# The novelty warning, measured",
        "",
        f"Model: `{args.model or 'the shipped default'}`; novelty limit {limit:.3f} "
        f"({det.novelty_.info_.get('chosen_on', '?')}, {det.novelty_.info_.get('percentile', 99)}th "
        "percentile). Made by `python -m benchmarks.novelty --markdown docs/novelty.md`. "
        "wild (1) / studio (1): first halves (trained on by a --wide-real model); (2): second "
        "halves (never trained on). Error: wrong label at the operating threshold.",
        "",
        "| split | class | group | faces | flagged | error if flagged | error if not |",
        "|---|---|---|---|---|---|---|",
    ]

    def rate(pairs, flagged: bool) -> str:
        wrong = [w for f, w in pairs if f == flagged]
        return f"{100 * np.mean(wrong):.1f}% of {len(wrong)}" if wrong else "–"

    for (split, label, name), pairs in sorted(
        table.items(), key=lambda kv: (kv[0][0] != "val", kv[0])
    ):
        flags = [f for f, _ in pairs]
        lines.append(
            f"| {split} | {label} | {name} | {len(flags)} | {100 * np.mean(flags):.1f}% | "
            f"{rate(pairs, True)} | {rate(pairs, False)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"limit": limit, "n": len(rows)}))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

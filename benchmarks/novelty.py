"""How often the shipped model's novelty warning fires, per split, real source and generator.

    python benchmarks/novelty.py [--model M] [--markdown docs/novelty.md]

Runs the model on the largest face of every image of ../shared/faces val, test and wild/real
(the same detection and alignment as `fakespotter detect`) and counts the faces whose novelty
distance is above the model's limit (chosen on val by `fakespotter train --val-real
--val-fake`: so val's rate is ~1% by construction, and test and wild are the honest ones).
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
    for folder in ("val/real", "val/fake", "test/real", "test/fake", "wild/real"):
        files = sorted((FACES / folder).iterdir())[: args.limit]
        found = largest_faces(cropper, files, progress=True, desc=folder)
        novelty = det.novelty(det.transform(found.crops)) if len(found.crops) else np.zeros(0)
        for path, v in zip(found.paths, novelty, strict=True):
            label, name = group.get(Path(path).name, ("?", "?"))
            rows.append(
                {"split": folder.split("/")[0], "label": label, "group": name, "novelty": float(v)}
            )
    limit = det.novelty_threshold_
    table = {}
    for r in rows:
        for key in ((r["split"], r["label"], "all"), (r["split"], r["label"], r["group"])):
            table.setdefault(key, []).append(r["novelty"] > limit)
    lines = [
        "# The novelty warning, measured",
        "",
        f"Model: `{args.model or 'the shipped default'}`; novelty limit {limit:.3f} "
        f"({det.novelty_info_.get('chosen_on', '?')}, {det.novelty_info_.get('percentile', 99)}th "
        "percentile). Made by `python benchmarks/novelty.py --markdown docs/novelty.md`.",
        "",
        "| split | class | group | faces | flagged |",
        "|---|---|---|---|---|",
    ]
    for (split, label, name), flags in sorted(
        table.items(), key=lambda kv: (kv[0][0] != "val", kv[0])
    ):
        lines.append(f"| {split} | {label} | {name} | {len(flags)} | {100 * np.mean(flags):.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"limit": limit, "n": len(rows)}))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

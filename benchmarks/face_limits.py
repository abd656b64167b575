"""Measure what the face finder sees on the developer face set, to set the row warnings.

The detector was trained and measured on these faces; a face outside what they span (much
smaller, found with lower confidence, or an "aligned" input that is no face at all) gets a
``warning`` in its row. This script measures, per folder of ``../shared/faces``:

* the largest face's box short side in pixels and MTCNN's confidence (percentiles);
* where MTCNN puts the face box in an aligned (FFHQ-style) photo, as fractions of its size:
  the box an ``--aligned`` input is checked in;
* O-Net's face probability in that box for aligned faces, and for inputs that are no face
  (flat grey, noise, the background corners of the test photo), for the aligned check.

python -m benchmarks.face_limits --per-folder 300 --json docs/face_limits.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fakespotter.faces import ImageError, load_image
from fakespotter.faces.pipeline import load_detector

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
FOLDERS = ["train/real", "train/fake", "val/real", "val/fake", "wild/real"]
ASTRONAUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "astronaut.jpg"


def spread(files: list[Path], n: int) -> list[Path]:
    if n >= len(files):
        return files
    step = len(files) / n  # names are grouped by source: spread over all of them
    return [files[int(i * step)] for i in range(n)]


def percentiles(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(v, q)) for q in (0, 1, 5, 50)} | {"n": int(len(v))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES)
    parser.add_argument("--per-folder", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mtcnn = load_detector(progress=False)
    sizes, scores, fractions, onet_aligned = {}, {}, [], []
    for folder in FOLDERS:
        files = sorted((args.faces / folder).iterdir())
        size, score = [], []
        for path in tqdm(spread(files, args.per_folder), desc=folder):
            try:
                image = load_image(path)
            except ImageError:
                continue
            faces = mtcnn.detect(image)
            if not faces:
                continue
            x0, y0, x1, y1 = faces[0].box
            size.append(min(x1 - x0, y1 - y0))
            score.append(faces[0].score)
            if not folder.startswith("wild"):  # FFHQ-style aligned photos
                h, w = image.shape[:2]
                fractions.append([x0 / w, y0 / h, x1 / w, y1 / h])
        sizes[folder], scores[folder] = percentiles(size), percentiles(score)
    box = np.median(np.array(fractions), axis=0)
    # O-Net's face probability in that fixed box: aligned faces vs things that are no face.
    for folder in FOLDERS[:4]:
        for path in spread(sorted((args.faces / folder).iterdir()), 100):
            image = load_image(path)
            h, w = image.shape[:2]
            onet_aligned.append(float(mtcnn.face_probability(image, box * [w, h, w, h])[0]))
    rng = np.random.default_rng(0)
    photo = load_image(ASTRONAUT)
    not_faces = {
        "grey": np.full((256, 256, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "photo corner top-left": photo[:160, :160],
        "photo corner top-right": photo[:160, -160:],
        "photo corner bottom-left": photo[-160:, :160],
        "photo corner bottom-right": photo[-160:, -160:],
    }
    onet_not_faces = {}
    for name, image in not_faces.items():
        h, w = image.shape[:2]
        onet_not_faces[name] = float(
            mtcnn.face_probability(np.ascontiguousarray(image), box * [w, h, w, h])[0]
        )
    result = {
        "box_short_side_px": sizes,
        "detector_score": scores,
        "aligned_face_box": [round(float(v), 4) for v in box],
        "onet_in_aligned_box": {
            "aligned faces": percentiles(onet_aligned),
            "not faces": onet_not_faces,
        },
        "per_folder": args.per_folder,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

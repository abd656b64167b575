"""Measure the embedding similarity that tells "same person" from "another person", per
backbone: the numbers behind ``fakespotter.video.TRACK_SIMILARITY``.

Different people: every pair of distinct photos of ../shared/faces/test (each photo is a
different person; real FFHQ and StyleGAN fakes alike, since a video may show either).
Same person: each photo against perturbed copies of itself, the changes a face goes through
between sampled video frames: shifted and rescaled in the frame (so MTCNN finds slightly
different landmarks), JPEG recompressed, brighter/darker, blurred, tilted, mirrored (a crude
stand-in for a change of pose), and all of shift + JPEG + brightness + blur at once. Every
copy goes through the video path: MTCNN on the whole image, then alignment to the
backbone's crop.

    python -m benchmarks.track_threshold [--n 150] [--backbones sface facenet dlib]

Prints, per backbone, percentiles of both distributions and a threshold halfway between
the different-person 99.9th percentile and the same-person 0.5th percentile.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from fakespotter.backbones import get_backbone
from fakespotter.faces.align import warp_face
from fakespotter.faces.pipeline import load_detector

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _shift(im: Image.Image, dx: float, dy: float, scale: float = 1.0) -> Image.Image:
    """The photo moved by (dx, dy) of its size and rescaled, on a grey canvas of the same size."""
    w, h = im.size
    small = im.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h), (128, 128, 128))
    canvas.paste(
        small, (round((w - small.width) / 2 + dx * w), round((h - small.height) / 2 + dy * h))
    )
    return canvas


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


PERTURBATIONS = {
    "shift": lambda im: _shift(im, 0.06, -0.04),
    "shift+zoom-out": lambda im: _shift(im, -0.05, 0.03, scale=0.8),
    "jpeg q30": lambda im: _jpeg(im, 30),
    "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.65),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.35),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
    "tilt 8deg": lambda im: im.rotate(
        8, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128)
    ),
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "all at once": lambda im: _jpeg(
        ImageEnhance.Brightness(
            _shift(im, 0.04, 0.04, 0.9).filter(ImageFilter.GaussianBlur(1.0))
        ).enhance(0.8),
        40,
    ),
}


def _largest_face(mtcnn, image: np.ndarray):
    faces = mtcnn.detect(image)
    if not faces:
        return None
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).landmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150, help="photos per class (real, fake)")
    parser.add_argument("--backbones", nargs="+", default=["sface", "facenet", "dlib"])
    args = parser.parse_args()

    rng = random.Random(0)
    paths = []
    for label in ("real", "fake"):
        files = sorted((FACES / "test" / label).glob("*.jpg"))
        paths += rng.sample(files, args.n)

    # MTCNN once per photo and copy; each backbone then warps the same landmarks
    t0 = time.time()
    mtcnn = load_detector(progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MTCNN's many small ops (see faces/pipeline.py)
    photos = []  # (photo index, variant name, image, landmarks)
    for i, path in enumerate(paths):
        im = Image.open(path).convert("RGB")
        for name, change in [("original", lambda x: x)] + list(PERTURBATIONS.items()):
            image = np.asarray(change(im))
            landmarks = _largest_face(mtcnn, image)
            if landmarks is not None:
                photos.append((i, name, image, landmarks))
    torch.set_num_threads(threads)  # the backbones use them all
    found = {i for i, name, *_ in photos if name == "original"}
    print(
        f"{len(paths)} photos ({args.n} real, {args.n} fake), faces found in {len(found)}; "
        f"{len(photos)} crops, detection {time.time() - t0:.0f} s"
    )

    for backbone in args.backbones:
        t0 = time.time()
        bb = get_backbone(backbone).load(progress=False)
        template = bb.alignment_template
        crops = np.stack(
            [warp_face(image, lm, template, bb.input_size) for _, _, image, lm in photos]
        )
        parts = []
        with torch.inference_mode():
            for start in range(0, len(crops), bb.batch_size):
                parts.append(
                    bb.model.eval()(bb.preprocess(crops[start : start + bb.batch_size]))
                    .float()
                    .numpy()
                )
        E = np.concatenate(parts)
        E /= np.linalg.norm(E, axis=1, keepdims=True)

        original = {i: E[k] for k, (i, name, *_) in enumerate(photos) if name == "original"}
        same: dict[str, list[float]] = {}
        for k, (i, name, *_) in enumerate(photos):
            if name != "original" and i in original:
                same.setdefault(name, []).append(float(E[k] @ original[i]))
        originals = np.stack(list(original.values()))
        S = originals @ originals.T
        different = S[np.triu_indices(len(originals), k=1)]
        all_same = np.concatenate([np.array(v) for v in same.values()])

        print(f"\n{backbone} ({time.time() - t0:.0f} s)")
        for name, values in same.items():
            v = np.array(values)
            print(
                f"  same person, {name:15s} n={len(v):4d}  min {v.min():.3f}  1% {np.percentile(v, 1):.3f}"
                f"  median {np.median(v):.3f}"
            )
        lo = np.percentile(all_same, 0.5)
        hi = np.percentile(different, 99.9)
        print(
            f"  same person, all copies      n={len(all_same):4d}  min {all_same.min():.3f}  "
            f"0.5% {lo:.3f}  5% {np.percentile(all_same, 5):.3f}  median {np.median(all_same):.3f}"
        )
        print(
            f"  different people   pairs n={len(different)}  median {np.median(different):.3f}  "
            f"99% {np.percentile(different, 99):.3f}  99.9% {hi:.3f}  max {different.max():.3f}"
        )
        threshold = (lo + hi) / 2
        print(
            f"  threshold halfway: {threshold:.3f}: same-person copies below it "
            f"{(all_same < threshold).mean():.2%}, different-person pairs at or above "
            f"{(different >= threshold).mean():.3%}"
        )


if __name__ == "__main__":
    main()

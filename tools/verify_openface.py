"""Check the torch OpenFace port against OpenCV's Torch7 importer running the original file.

How to run (OpenCV 4.x; its dnn module reads Torch7 files, 5.x dropped that importer):
    .venv/bin/pip install "opencv-python-headless>=4,<5"
    .venv/bin/python tools/verify_openface.py [--weights nn4.small2.v1.t7]

Without --weights it uses the cached file (`fakespotter weights fetch openface` or `fakespotter
weights import FILE`); without a file or without cv2 it says so and exits with status 2.
The same crops (a test card, its mirror, seeded noise, all 96x96 RGB) go to
``cv2.dnn.readNetFromTorch`` as ``blobFromImages(crops, 1/255)``, the 0..1 RGB input that
OpenFace's ``image.load`` gives, and to ``fakespotter.backbones.openface``; it prints the
largest absolute embedding difference and exits 1 if it is over --tolerance.
Any nn4.small2 ``.t7`` file works, e.g. one the tests write with random weights.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 96


def crops() -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    card = np.stack(
        [x * 255 // (SIZE - 1), y * 255 // (SIZE - 1), ((x // 12 + y // 12) % 2) * 200 + 30],
        axis=-1,
    ).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    return np.concatenate([card[None], card[None, :, ::-1], noise])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="nn4.small2.v1.t7 (default: the cache)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from fakespotter import weights
    from fakespotter.backbones import get_backbone

    path = args.weights or weights.cached_file(get_backbone("openface").weights)
    if not path.is_file():
        print(
            f"no OpenFace weights at {path}: nothing compared. Get nn4.small2.v1.t7 with "
            f"`fakespotter weights fetch openface` (or `fakespotter weights import FILE`), "
            f"or pass --weights",
            file=sys.stderr,
        )
        return 2
    try:
        import cv2
    except ImportError:
        print(
            "OpenCV is not installed: nothing compared. pip install 'opencv-python-headless>=4,<5'",
            file=sys.stderr,
        )
        return 2

    import torch

    from fakespotter.backbones import openface

    images = crops()
    net = cv2.dnn.readNetFromTorch(str(path))
    # crops are RGB already: no swap; 1/255 as image.load(path, 3, 'float') does
    net.setInput(cv2.dnn.blobFromImages(list(images), 1.0 / 255, (SIZE, SIZE), swapRB=False))
    original = net.forward().reshape(len(images), -1)

    model = openface.load_model(path)
    with torch.inference_mode():
        ported = model(openface.preprocess(images)).numpy()

    differences = np.abs(ported - original).max(axis=1)
    cosine = (ported * original).sum(1) / (
        np.linalg.norm(ported, axis=1) * np.linalg.norm(original, axis=1)
    )
    print(f"weights: {path} sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    print(f"original: OpenCV {cv2.__version__} dnn.readNetFromTorch")
    print(f"port: torch {torch.__version__}, fakespotter.backbones.openface")
    for name, difference in zip(
        ["test card", "test card mirrored", "noise 1", "noise 2", "noise 3"],
        differences,
        strict=True,
    ):
        print(f"{name:20s} max|diff| {difference:.3e}")
    print(f"min cosine similarity: {cosine.min():.9f}")
    print(f"largest absolute embedding difference: {differences.max():.3e}")
    return 0 if differences.max() <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

"""Check the torch port of dlib's face-recognition ResNet against dlib itself.

How to run (from the repository root):

    python3 -m venv ../venvs/dlib
    ../venvs/dlib/bin/pip install dlib-bin scikit-image numpy pillow
    .venv/bin/python tools/verify_dlib.py [--dlib-python ../venvs/dlib/bin/python]
                                          [--write-reference]

The script runs in the project venv (torch, the port) and calls itself under the
dlib venv (``--dlib-side``) to get dlib's descriptors, passing uint8 crops through
a temporary .npy file. dlib's ``face_recognition_model_v1.compute_face_descriptor``
on an already aligned 150x150 chip runs the network on the chip as given.

Inputs: the reference crops (tests/data/reference/dlib_inputs.png: the astronaut
face, its mirror image and a synthetic pattern) plus 10 real and 10 fake faces from
../shared/faces/test resized to 150x150. It prints the largest absolute
difference of the 128-d descriptors. ``--write-reference`` (re)creates the PNG
(needs scikit-image in the dlib venv) and tests/data/reference/dlib.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = Path("~/.cache/fakespotter/dlib/dlib_face_recognition_resnet_model_v1.dat").expanduser()
REFERENCE_PNG = ROOT / "tests/data/reference/dlib_inputs.png"
REFERENCE_JSON = ROOT / "tests/data/reference/dlib.json"
FACES = ROOT.parent / "shared" / "faces" / "test"
SIZE = 150
# Fixed astronaut crop: 128x128 pixels at x=160, y=60 of skimage.data.astronaut(),
# bilinear-resized to 150x150: eyes land near dlib's chip framing (~y 47).
ASTRONAUT_BOX = (160, 60, 288, 188)


def synthetic_pattern() -> np.ndarray:
    """Deterministic 150x150 RGB pattern: gradients, a sinusoid and a checkerboard."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    red = x * 255 / (SIZE - 1)
    green = 127.5 + 127.5 * np.sin(2 * np.pi * (x + 2 * y) / 37.0)
    blue = np.where(((x // 10) + (y // 10)) % 2 == 0, 230.0, 25.0)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def make_reference_crops() -> np.ndarray:
    """The three reference crops, 3 x 150 x 150 x 3 uint8 (needs scikit-image)."""
    from skimage import data

    face = (
        Image.fromarray(data.astronaut()).crop(ASTRONAUT_BOX).resize((SIZE, SIZE), Image.BILINEAR)
    )
    face = np.asarray(face)
    return np.stack([face, face[:, ::-1], synthetic_pattern()])


def load_reference_crops() -> np.ndarray:
    strip = np.asarray(Image.open(REFERENCE_PNG).convert("RGB"))
    return np.stack([strip[:, i : i + SIZE] for i in range(0, strip.shape[1], SIZE)])


def load_face_crops(per_class: int = 10) -> tuple[list[str], np.ndarray]:
    names, crops = [], []
    for label in ("real", "fake"):
        for path in sorted((FACES / label).glob("*.jpg"))[:per_class]:
            img = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            names.append(f"{label}/{path.name}")
            crops.append(np.asarray(img))
    return names, np.stack(crops)


def dlib_side(crops_npy: str, out_npy: str, write_reference: bool) -> None:
    """Runs under the dlib venv: descriptors for the crops in crops_npy."""
    import dlib

    if write_reference:
        reference = make_reference_crops()
        REFERENCE_PNG.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(list(reference), axis=1)).save(REFERENCE_PNG)
    model = dlib.face_recognition_model_v1(str(WEIGHTS))
    crops = np.load(crops_npy)
    descriptors = [np.array(model.compute_face_descriptor(np.ascontiguousarray(c))) for c in crops]
    np.save(out_npy, np.stack(descriptors))
    from importlib.metadata import version

    print(f"dlib {dlib.__version__} (PyPI dlib-bin {version('dlib-bin')})", file=sys.stderr)


def dlib_descriptors(
    dlib_python: str, crops: np.ndarray, write_reference: bool = False
) -> tuple[np.ndarray, str]:
    with tempfile.TemporaryDirectory() as tmp:
        crops_npy, out_npy = f"{tmp}/crops.npy", f"{tmp}/out.npy"
        np.save(crops_npy, crops)
        cmd = [dlib_python, __file__, "--dlib-side", crops_npy, out_npy]
        done = subprocess.run(
            cmd + (["--write-reference"] if write_reference else []),
            check=True,
            capture_output=True,
            text=True,
        )
        return np.load(out_npy), done.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dlib-python", default=str(ROOT.parent / "venvs" / "dlib" / "bin" / "python")
    )
    parser.add_argument("--write-reference", action="store_true")
    parser.add_argument(
        "--dlib-side", nargs=2, metavar=("CROPS_NPY", "OUT_NPY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.dlib_side:
        dlib_side(*args.dlib_side, args.write_reference)
        return

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from fakespotter.backbones import dlib_resnet

    if args.write_reference:  # dlib side writes the PNG first
        dlib_descriptors(
            args.dlib_python, np.zeros((1, SIZE, SIZE, 3), np.uint8), write_reference=True
        )
    reference = load_reference_crops()
    names, faces = load_face_crops()
    names = ["reference/astronaut", "reference/astronaut_mirrored", "reference/pattern"] + names
    crops = np.concatenate([reference, faces])

    expected, framework = dlib_descriptors(args.dlib_python, crops)
    model = dlib_resnet.load_model(WEIGHTS)
    with torch.no_grad():
        got = model(dlib_resnet.preprocess(crops)).numpy().astype(np.float64)

    print(f"weights: {WEIGHTS.name} sha256 {hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()}")
    print(f"original: {framework}, CPU; port: torch {torch.__version__} CPU float32")
    print(f"{'input':45s} {'max|diff|':>10s} {'|dlib|':>8s} {'cosine':>10s}")
    for name, a, b in zip(names, expected, got, strict=False):
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        print(f"{name:45s} {np.abs(a - b).max():10.2e} {np.linalg.norm(a):8.4f} {cos:10.7f}")
    print(
        f"largest absolute difference over {len(crops)} inputs: {np.abs(expected - got).max():.3e}"
    )

    if args.write_reference:
        command = (
            ".venv/bin/python tools/verify_dlib.py --write-reference  # dlib side, in ../venvs/dlib: "
            "dlib.face_recognition_model_v1(weights).compute_face_descriptor(crop) per 150x150 crop"
        )
        record = {
            "backbone": "dlib",
            "weights_sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
            "framework": framework,
            "command": command,
            "embeddings": [[float(v) for v in row] for row in expected[: len(reference)]],
        }
        REFERENCE_JSON.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {REFERENCE_PNG.relative_to(ROOT)} and {REFERENCE_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

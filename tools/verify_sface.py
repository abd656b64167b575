"""Check the torch SFace port against onnxruntime running the original int8 ONNX file.

How to run (two interpreters: the port needs torch, the original needs onnxruntime):
    python3 -m venv ../venvs/sface
    ../venvs/sface/bin/pip install onnxruntime opencv-python-headless scikit-image pillow numpy
    .venv/bin/python tools/verify_sface.py [--write-reference]

The project interpreter re-runs this file under --ort-python (default ../venvs/sface/bin/python) with
--worker. The worker builds the crops (reference crops from skimage's astronaut photo plus 20 test faces
resized to 112x112), feeds each one to onnxruntime exactly as OpenCV's FaceRecognizerSF::feature does
(blobFromImage(bgr, 1.0, (112, 112), (0, 0, 0), swapRB=True)) and saves crops and embeddings. This process
then runs the port on the same uint8 crops and prints the largest absolute embedding difference.
--write-reference also writes tests/data/reference/sface_inputs.png and sface.json from the reference crops.
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

ROOT = Path(__file__).resolve().parents[1]  # the repository
REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path.home() / ".cache/fakespotter/sface/face_recognition_sface_2021dec_int8bq.onnx"
FACES = ROOT.parent / "shared" / "faces" / "test"
REFERENCE_DIR = REPO / "tests/data/reference"
SIZE = 112
FACES_PER_CLASS = 10

# Astronaut recipe: hand-picked landmarks of Eileen Collins' face in skimage.data.astronaut() (512x512), in our
# order (left eye, right eye, nose tip, left mouth corner, right mouth corner; left = smaller x), warped onto
# sface.ALIGNMENT_TEMPLATE by a least-squares similarity transform with bilinear sampling (PIL).
ASTRONAUT_LANDMARKS = [
    [205.0, 102.0],
    [247.0, 103.0],
    [225.0, 123.0],
    [205.0, 140.0],
    [248.0, 138.0],
]


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (Umeyama, no reflection) mapping source points onto target points."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centered, target_centered = source - source_mean, target - target_mean
    covariance = target_centered.T @ source_centered / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = (singular * np.diag(sign)).sum() / source_centered.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def synthetic_pattern() -> np.ndarray:
    """Deterministic 112x112 RGB test card: two gradients and a checkerboard."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    red = x * 255 // (SIZE - 1)
    green = y * 255 // (SIZE - 1)
    blue = ((x // 14 + y // 14) % 2) * 200 + 30
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def reference_crops(template: np.ndarray) -> np.ndarray:
    """Astronaut face aligned to the template, its mirror image, and the synthetic pattern."""
    from PIL import Image
    from skimage.data import astronaut

    forward = similarity_transform(np.array(ASTRONAUT_LANDMARKS), template)
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[
        :2
    ]  # PIL maps output pixels to input pixels
    face = Image.fromarray(astronaut()).transform(
        (SIZE, SIZE),
        Image.Transform.AFFINE,
        tuple(inverse.ravel()),
        resample=Image.Resampling.BILINEAR,
    )
    face = np.asarray(face)
    return np.stack([face, face[:, ::-1], synthetic_pattern()])


def dataset_crops() -> tuple[np.ndarray, list[str]]:
    """FACES_PER_CLASS evenly spaced real and fake test faces, resized to 112x112 (bilinear)."""
    from PIL import Image

    crops, names = [], []
    for label in ("real", "fake"):
        files = sorted((FACES / label).glob("*.jpg"))
        for path in files[:: max(1, len(files) // FACES_PER_CLASS)][:FACES_PER_CLASS]:
            image = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            crops.append(np.asarray(image))
            names.append(f"{label}/{path.name}")
    return np.stack(crops), names


def run_worker(output: Path, template: np.ndarray) -> None:
    """Original side: onnxruntime on the int8 ONNX file with OpenCV's blobFromImage preprocessing."""
    import cv2
    import onnxruntime

    reference = reference_crops(template)
    faces, face_names = (
        dataset_crops() if FACES.is_dir() else (np.zeros((0, SIZE, SIZE, 3), np.uint8), [])
    )
    crops = np.concatenate([reference, faces])
    session = onnxruntime.InferenceSession(str(WEIGHTS), providers=["CPUExecutionProvider"])
    # The file (IR v6) still lists its old float weight names as graph inputs although no node reads them;
    # onnxruntime insists on a value for each, so feed zeros of the declared shapes.
    unused_inputs = {
        item.name: np.zeros(item.shape, np.float32)
        for item in session.get_inputs()
        if item.name != "data"
    }
    embeddings = []
    for rgb in crops:  # the model's batch dimension is fixed to 1
        blob = cv2.dnn.blobFromImage(
            np.ascontiguousarray(rgb[:, :, ::-1]),
            1.0,
            (SIZE, SIZE),
            (0, 0, 0),
            swapRB=True,
            crop=False,
        )
        embeddings.append(session.run(["fc1"], {"data": blob, **unused_inputs})[0][0])
    framework = f"onnxruntime {onnxruntime.__version__} (CPU), opencv-python-headless {cv2.__version__} blobFromImage"
    np.savez(
        output,
        crops=crops,
        embeddings=np.stack(embeddings).astype(np.float32),
        names=np.array(["astronaut", "astronaut_mirrored", "synthetic_pattern"] + face_names),
        reference_count=len(reference),
        framework=framework,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ort-python", default=str(ROOT.parent / "venvs" / "sface" / "bin" / "python")
    )
    parser.add_argument("--write-reference", action="store_true")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--template", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, np.array(json.loads(args.template), dtype=np.float64))
        return

    import torch

    sys.path.insert(0, str(REPO / "src"))
    from fakespotter.backbones import sface

    template = json.dumps(sface.ALIGNMENT_TEMPLATE.tolist())
    with tempfile.TemporaryDirectory() as folder:
        result_path = Path(folder) / "original.npz"
        subprocess.run(
            [args.ort_python, __file__, "--worker", str(result_path), "--template", template],
            check=True,
            stderr=subprocess.DEVNULL,  # onnxruntime warns about the two unused shape initializers
        )
        result = np.load(result_path)
        crops, original, names = result["crops"], result["embeddings"], result["names"].tolist()
        reference_count, framework = int(result["reference_count"]), str(result["framework"])

    model = sface.load_model(WEIGHTS)
    with torch.no_grad():
        ported = model(sface.preprocess(crops)).numpy()
    differences = np.abs(ported - original).max(axis=1)
    print(f"weights: {WEIGHTS.name} sha256 {hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()}")
    print(f"original: {framework}")
    print(f"port: torch {torch.__version__}, fakespotter.backbones.sface")
    for name, difference, embedding in zip(names, differences, original, strict=False):
        print(
            f"{name:48s} max|diff| {difference:.3e}   |embedding|max {np.abs(embedding).max():.3f}"
        )
    cosine = (
        (ported * original).sum(1)
        / np.linalg.norm(ported, axis=1)
        / np.linalg.norm(original, axis=1)
    )
    print(f"images: {len(names)}  min cosine similarity: {cosine.min():.9f}")
    print(f"largest absolute embedding difference: {differences.max():.3e}")

    if args.write_reference:
        write_reference(crops[:reference_count], original[:reference_count], framework)


def write_reference(crops: np.ndarray, embeddings: np.ndarray, framework: str) -> None:
    from PIL import Image

    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(list(crops), axis=1)).save(REFERENCE_DIR / "sface_inputs.png")
    record = {
        "backbone": "sface",
        "weights_sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
        "framework": framework,
        "command": ".venv/bin/python tools/verify_sface.py --write-reference",
        "inputs": "sface_inputs.png: astronaut face aligned to ALIGNMENT_TEMPLATE, its mirror, synthetic pattern",
        "embeddings": [[float(value) for value in row] for row in embeddings],
    }
    (REFERENCE_DIR / "sface.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {REFERENCE_DIR / 'sface_inputs.png'} and {REFERENCE_DIR / 'sface.json'}")


if __name__ == "__main__":
    main()

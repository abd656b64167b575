"""A minimal reader of ONNX model files: the graph's nodes and its constant tensors.

Enough for the int8 block-quantized OpenCV Zoo files (SFace, YuNet): nodes with their
attributes, initializers, and the constant subgraph that dequantizes and reshapes the weights
(``evaluate_constants``). No onnx package: the protobuf wire format is read directly, and
nothing in a file can execute.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def scalar_attribute(onnx_node: Node, key: str, default: float) -> float:
    """A node's int or float attribute (``default`` when absent)."""
    value = onnx_node.attributes.get(key, default)
    if not isinstance(value, (int, float)):
        raise ValueError(f"{onnx_node.op_type} attribute {key!r} is not a number: {value!r}")
    return value


def evaluate_constants(graph: Graph) -> dict[str, np.ndarray]:
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
            constants[onnx_node.outputs[0]] = dequantize(
                x,
                scale,
                zero_point,
                axis=int(scalar_attribute(onnx_node, "axis", 1)),
                block_size=int(scalar_attribute(onnx_node, "block_size", 0)),
            )
        elif onnx_node.op_type == "Reshape":
            data, shape = constants[onnx_node.inputs[0]], constants[onnx_node.inputs[1]]
            target = [
                data.shape[i] if size == 0 else int(size) for i, size in enumerate(shape.tolist())
            ]
            constants[onnx_node.outputs[0]] = data.reshape(target)
    return constants


def dequantize(
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
class Node:
    op_type: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
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


def _read_node(buffer: memoryview) -> Node:
    node = Node()
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


def read_graph(model_bytes: memoryview) -> Graph:
    graph_bytes = None
    for number, wire_type, value in _fields(model_bytes):
        if number == 7 and wire_type == _WIRE_BYTES:
            graph_bytes = value
    if graph_bytes is None:
        raise ValueError("no ModelProto.graph field")
    graph = Graph()
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


def read_file(path: str | Path) -> Graph:
    """The graph of the ONNX file at ``path``; ValueError (one line) when it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        return read_graph(memoryview(data))
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable ONNX model: {error}") from None

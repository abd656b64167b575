"""A minimal ONNX writer for tests: YuNet's graph (OpenCV Zoo 2023mar layout) with random
int8 block-quantized weights, written with the protobuf wire format by hand (no onnx package).

Field numbers from onnx.proto: ModelProto ir_version=1, graph=7, opset_import=8; GraphProto
node=1, name=2, initializer=5; NodeProto input=1, output=2, name=3, op_type=4, attribute=5;
AttributeProto name=1, i=3, ints=8, type=20 (INT=2, INTS=7); TensorProto dims=1, data_type=2,
name=8, raw_data=9 (FLOAT=1, INT8=3, INT64=7).
"""

from __future__ import annotations

import numpy as np

from fakespotter.faces import yunet

_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.int8): 3, np.dtype(np.int64): 7}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def tensor(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    dims = b"".join(_int(1, d) for d in array.shape)
    return (
        dims
        + _int(2, _DTYPES[array.dtype])
        + _bytes(8, name.encode())
        + _bytes(9, array.astype(array.dtype.newbyteorder("<")).tobytes())
    )


def attribute(name: str, value) -> bytes:
    if isinstance(value, (list, tuple)):
        packed = b"".join(_varint(v) for v in value)
        return _bytes(1, name.encode()) + _bytes(8, packed) + _int(20, 7)
    if isinstance(value, bytes):
        return _bytes(1, name.encode()) + _bytes(4, value) + _int(20, 3)
    return _bytes(1, name.encode()) + _int(3, value) + _int(20, 2)


def node(op: str, inputs, outputs, **attributes) -> bytes:
    return (
        b"".join(_bytes(1, i.encode()) for i in inputs)
        + b"".join(_bytes(2, o.encode()) for o in outputs)
        + _bytes(4, op.encode())
        + b"".join(_bytes(5, attribute(k, v)) for k, v in attributes.items())
    )


def model(nodes: list[bytes], initializers: list[bytes]) -> bytes:
    graph = (
        b"".join(_bytes(1, n) for n in nodes)
        + _bytes(2, b"test")
        + b"".join(_bytes(5, t) for t in initializers)
    )
    opset = _bytes(1, b"") + _int(2, 21)
    return _int(1, 10) + _bytes(7, graph) + _bytes(8, opset)


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0
        self.weights: list[tuple[np.ndarray, np.ndarray]] = []  # dequantized (weight, bias)

    def name(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def const(self, array: np.ndarray) -> str:
        name = self.name()
        self.inits.append(tensor(name, array))
        return name

    def op(self, op: str, *inputs: str, **attributes) -> str:
        out = self.name()
        self.nodes.append(node(op, inputs, [out], **attributes))
        return out

    def conv(self, x: str, conv) -> str:
        out_c, in_c, kh, kw = conv.weight.shape
        flat = in_c * kh * kw
        block = 9 if flat % 9 == 0 and flat <= 9 else 64
        blocks = -(-flat // block)
        q = self.rng.integers(-127, 128, size=(out_c, flat), dtype=np.int8)
        scales = self.rng.uniform(1e-3, 2e-2, size=(out_c, blocks)).astype(np.float32)
        zero = np.zeros((out_c, blocks), np.int8)
        w = self.op("DequantizeLinear", self.const(q), self.const(scales), self.const(zero),
                    axis=1, block_size=block)  # fmt: skip
        w4 = self.op("Reshape", w, self.const(np.array([out_c, in_c, kh, kw], np.int64)))
        bias = self.rng.normal(0, 0.1, out_c).astype(np.float32)
        dequantized = (q.astype(np.float32) * np.repeat(scales, block, axis=1)[:, :flat]).reshape(
            out_c, in_c, kh, kw
        )
        self.weights.append((dequantized, bias))
        pad = conv.padding[0]
        return self.op("Conv", x, w4, self.const(bias), group=conv.groups,
                       kernel_shape=[kh, kw], pads=[pad] * 4, strides=list(conv.stride))  # fmt: skip


def yunet_file(seed: int = 0, drop_op: str | None = None) -> tuple[bytes, list]:
    """A YuNet ONNX file with random weights, and the (weight, bias) float32 arrays its convs
    hold, in graph order. ``drop_op``: leave out the first node of that type (a broken file)."""
    b = _Builder(np.random.default_rng(seed))
    net = yunet.YuNet()
    convs = iter(net.convs_in_graph_order())

    def unit(x, relu=True):
        x = b.conv(b.conv(x, next(convs)), next(convs))
        return b.op("Relu", x) if relu else x

    x = b.op("Relu", b.conv("input", next(convs)))
    levels = []
    for k, stage in enumerate(yunet._STAGES):
        for _ in stage:
            x = unit(x)
        if k >= 3:
            levels.append(x)
        if k in yunet._POOL_AFTER:
            x = b.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
    empty, twice = b.const(np.zeros(0, np.float32)), b.const(np.array([1, 1, 2, 2], np.float32))
    p2 = unit(levels[2])
    up = b.op("Resize", p2, empty, twice, mode=b"nearest")
    p1 = unit(b.op("Add", levels[1], up))
    up = b.op("Resize", p1, empty, twice, mode=b"nearest")
    p0 = unit(b.op("Add", levels[0], up))
    for name, size in yunet._HEADS.items():
        for p in (p0, p1, p2):
            y = b.op("Transpose", unit(p, relu=False), perm=[0, 2, 3, 1])
            y = b.op("Reshape", y, b.const(np.array([1, -1, size], np.int64)))
            if name in ("cls", "obj"):
                y = b.op("Sigmoid", y)
    nodes = b.nodes
    if drop_op is not None:
        marker = _bytes(4, drop_op.encode())
        index = next(i for i, n in enumerate(nodes) if marker in n)
        nodes = nodes[:index] + nodes[index + 1 :]
    return model(nodes, b.inits), b.weights

"""SFace face recognizer (OpenCV Zoo, face_recognition_sface_2021dec_int8bq.onnx) as a plain torch module.

The ONNX file is a MobileNet-style stack of conv + BatchNorm + PReLU blocks (depthwise 3x3 then pointwise 1x1),
then BatchNorm, dropout, a 50176 -> 128 fully connected layer and a final BatchNorm. Its conv and fc weights are
int8 with block-wise scales (DequantizeLinear on the initializers); activations are float. `load_model`
dequantizes them to float32 exactly as ONNX DequantizeLinear defines (fakespotter.onnxfile reads the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fakespotter import onnxfile
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
    graph = onnxfile.read_file(path)
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


def _copy_weights(graph: onnxfile.Graph, model: SFace) -> None:
    constants = onnxfile.evaluate_constants(graph)
    nodes_by_output = {node.outputs[0]: node for node in graph.nodes if node.outputs}

    def node(output: str, op_type: str) -> onnxfile.Node:
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

    def load_batchnorm(bn: nn.BatchNorm2d | nn.BatchNorm1d, onnx_node: onnxfile.Node) -> None:
        gamma, beta, mean, variance = onnx_node.inputs[1:5]
        # built with track_running_stats=True, so the running statistics exist
        assert bn.running_mean is not None and bn.running_var is not None
        load(bn.weight, gamma)
        load(bn.bias, beta)
        load(bn.running_mean, mean)
        load(bn.running_var, variance)
        bn.eps = float(onnxfile.scalar_attribute(onnx_node, "epsilon", 1e-5))

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


def _check_input_normalization(graph: onnxfile.Graph, constants: dict[str, np.ndarray]) -> None:
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


def _check_conv_attributes(onnx_node: onnxfile.Node, conv: nn.Conv2d) -> None:
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

"""YuNet face detector (OpenCV Zoo, face_detection_yunet_2023mar_int8bq.onnx) in plain torch.

YuNet (Wu, Peng, Yu: "YuNet: A Tiny Millisecond-level Face Detector", 2023) is the detector
whose five landmarks SFace's crops were aligned from. About 75k parameters: a backbone of
depthwise-separable units with max pools, a three-level feature pyramid (strides 8, 16, 32)
and anchor-free heads giving, per position, a class score, an objectness score, a box and five
landmarks. The ONNX file's weights are int8 with block-wise scales (BatchNorm already folded
in); ``load_model`` dequantizes them exactly as ONNX DequantizeLinear defines.

``YuNet.detect`` follows OpenCV's ``cv::FaceDetectorYN`` (modules/objdetect/src/face_detect.cpp):
the BGR image, padded at the bottom and right to a multiple of 32, as float pixels 0..255;
score = sqrt(clamp(cls) * clamp(obj)); box centre (col + dx, row + dy) * stride, size
exp(dw, dh) * stride; landmarks (col + lx, row + ly) * stride; scores under SCORE_THRESHOLD
dropped (0.8 here, 0.9 in OpenCV);
non-maximum suppression at IoU 0.3. On top of that, as our MTCNN does: a big photo is shrunk so
that the smallest wanted face (``min_face_fraction`` of the short side) is WORKING_FACE_SIZE
pixels, and a photo with no face is tried once more with a border (a face filling the frame).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakespotter import onnxfile
from fakespotter.faces.mtcnn import Face, ONet, nms, onet_on_boxes, rgb_image

STRIDES = (8, 16, 32)
DIVISOR = 32  # OpenCV pads the input to a multiple of the largest stride
# cv::FaceDetectorYN's default is 0.9. At 0.9 (benchmarks/face_detectors.py at 7aad650)
# YuNet missed the face in 47 of ../shared/faces' 9,802 photos, all but one of them real:
# a bias the classifier would learn. At 0.8 it misses none in train, val or test
# (docs/face_detectors.md).
SCORE_THRESHOLD = 0.8
NMS_THRESHOLD = 0.3
TOP_K = 5000
MIN_FACE_SIZE = 10  # pixels: smaller boxes are noise at stride 8
# When the smallest wanted face is bigger than this, the photo is shrunk so that it is this
# size: YuNet finds faces from about 10 px, and big photos cost pixels (measured in
# benchmarks/speed.py's detectors table).
WORKING_FACE_SIZE = 32
RETRY_PAD_FRACTION = 0.5  # a face that fills the frame is found with this border around it
# FaceCropper tries quarter turns when no upright face scores this much. YuNet's sure faces
# score 0.85-0.95 (MTCNN's 0.99+), so only a photo without an upright face is turned.
CONFIDENT_SCORE = SCORE_THRESHOLD
# Backbone units (in, out) per stage; a 2 x 2 max pool follows stages 0, 2, 3 and 4.
_STAGES = [[(16, 16)], [(16, 16), (16, 32)], [(32, 32), (32, 64)], [(64, 64)] * 2,
           [(64, 64)] * 2, [(64, 64)] * 2]  # fmt: skip
_POOL_AFTER = (0, 2, 3, 4)
_HEADS = {"cls": 1, "bbox": 4, "obj": 1, "kps": 10}  # outputs per position, in graph order
# What the ONNX file holds beyond the weight subgraph: checked before its weights are used.
_GRAPH_OPS = Counter({"Conv": 53, "Relu": 15, "Transpose": 12, "Reshape": 12, "Sigmoid": 6,
                      "MaxPool": 4, "Resize": 2, "Add": 2})  # fmt: skip


class SeparableUnit(nn.Module):
    """A 1 x 1 conv, then a depthwise 3 x 3 conv (both with bias), then ReLU or nothing."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)))


class YuNet(nn.Module):
    """BGR float pixels (N x 3 x H x W, H and W multiples of 32) -> per stride 8, 16, 32:
    class and objectness probabilities (N x 1 x h x w each), box and landmark offsets
    (N x 4 and N x 10 x h x w) in units of the stride."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.stages = nn.ModuleList(
            nn.Sequential(*(SeparableUnit(i, o) for i, o in stage)) for stage in _STAGES
        )
        self.lateral = nn.ModuleList(SeparableUnit(64, 64) for _ in STRIDES)
        self.heads = nn.ModuleDict(
            {
                name: nn.ModuleList(SeparableUnit(64, size, relu=False) for _ in STRIDES)
                for name, size in _HEADS.items()
            }
        )

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        x = F.relu(self.stem(x))
        levels = []
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k >= 3:  # stages 3, 4, 5: strides 8, 16, 32
                levels.append(x)
            if k in _POOL_AFTER:
                x = F.max_pool2d(x, 2, 2)
        # top-down: stride 32, then each finer level plus the coarser one upsampled
        p = [self.lateral[2](levels[2])]
        p.insert(0, self.lateral[1](levels[1] + F.interpolate(p[0], scale_factor=2.0)))
        p.insert(0, self.lateral[0](levels[0] + F.interpolate(p[0], scale_factor=2.0)))
        return [
            (
                torch.sigmoid(self._head("cls", i)(p[i])),
                torch.sigmoid(self._head("obj", i)(p[i])),
                self._head("bbox", i)(p[i]),
                self._head("kps", i)(p[i]),
            )
            for i in range(len(STRIDES))
        ]

    def _head(self, name: str, level: int) -> SeparableUnit:
        return cast(SeparableUnit, cast(nn.ModuleList, self.heads[name])[level])

    def units_in_graph_order(self) -> list[SeparableUnit]:
        units = [
            cast(SeparableUnit, u) for stage in self.stages for u in cast(nn.Sequential, stage)
        ]
        units += [cast(SeparableUnit, self.lateral[i]) for i in (2, 1, 0)]
        units += [self._head(name, i) for name in _HEADS for i in range(len(STRIDES))]
        return units

    def convs_in_graph_order(self) -> list[nn.Conv2d]:
        """Every conv, in the order the ONNX graph lists its Conv nodes."""
        return [self.stem, *(c for u in self.units_in_graph_order() for c in (u.conv1, u.conv2))]


def load_model(path: str | os.PathLike[str]) -> YuNet:
    """YuNet from the original int8 block-quantized ONNX file (ValueError if it is not)."""
    graph = onnxfile.read_file(Path(path))
    model = YuNet()
    try:
        _copy_weights(graph, model)
    except (IndexError, KeyError, TypeError) as error:  # malformed nodes in a readable file
        raise ValueError(f"{path} is not the YuNet ONNX model: {error!r}") from None
    return model.eval()


def _copy_weights(graph: onnxfile.Graph, model: YuNet) -> None:
    constants = onnxfile.evaluate_constants(graph)
    ops = Counter(
        n.op_type
        for n in graph.nodes
        if n.op_type != "DequantizeLinear" and not all(i in constants for i in n.inputs if i)
    )
    if ops != _GRAPH_OPS:
        raise ValueError(f"ONNX graph is not YuNet's: its operations are {dict(ops)}")
    nodes = [n for n in graph.nodes if n.op_type == "Conv"]
    with torch.no_grad():
        for node, conv in zip(nodes, model.convs_in_graph_order(), strict=True):
            pad = conv.padding[0]
            expected = {
                "group": conv.groups,
                "strides": list(conv.stride),
                "kernel_shape": list(conv.kernel_size),
                "pads": [pad] * 4,
            }
            for key, value in expected.items():
                if node.attributes.get(key, value) != value:
                    raise ValueError(f"Conv {node.outputs[0]!r} has {key}={node.attributes[key]}")
            assert conv.bias is not None  # every YuNet conv has one
            for parameter, name in ((conv.weight, node.inputs[1]), (conv.bias, node.inputs[2])):
                value = constants[name]
                if tuple(value.shape) != tuple(parameter.shape):
                    raise ValueError(
                        f"tensor {name!r} has shape {value.shape}, expected {tuple(parameter.shape)}"
                    )
                parameter.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


class YuNetDetector:
    """``detect(image) -> list[Face]`` with YuNet, as cv::FaceDetectorYN does it.

    Use ``YuNetDetector.from_files(onnx_path)``. ``min_face_fraction``: also ignore faces
    smaller than this fraction of the image's short side (and shrink big photos to match).
    """

    confident_score = CONFIDENT_SCORE

    def __init__(
        self,
        model: YuNet,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
        min_face_fraction: float = 0.0,
        retry_padded: bool = True,
    ) -> None:
        self.model = model.eval()
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.min_face_fraction = float(min_face_fraction)
        self.retry_padded = retry_padded

    @classmethod
    def from_files(cls, onnx: str | os.PathLike[str], **options) -> YuNetDetector:
        return cls(load_model(onnx), **options)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image; largest first."""
        image = rgb_image(image)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return []
        height, width = image.shape[:2]
        min_face = max(MIN_FACE_SIZE, self.min_face_fraction * min(height, width))
        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)
            pixels = pixels[None].float()  # BGR, as OpenCV feeds it
            scale = min(1.0, WORKING_FACE_SIZE / min_face)
            if scale < 1.0:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                pixels = F.interpolate(pixels, size=size, mode="area")
            sy, sx = pixels.shape[2] / height, pixels.shape[3] / width
            boxes, scores, points = self.raw_detect(pixels)
            if not len(boxes) and self.retry_padded:
                pad = round(RETRY_PAD_FRACTION * max(pixels.shape[2:]))
                padded = F.pad(pixels, (pad, pad, pad, pad), mode="replicate")
                boxes, scores, points = self.raw_detect(padded)
                boxes, points = boxes - pad, points - pad
        boxes = boxes / np.array([sx, sy, sx, sy])
        points = points / np.array([sx, sy])
        faces = [
            Face(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(s),
                landmarks=p.copy(),
            )  # fmt: skip
            for b, s, p in zip(boxes, scores, points, strict=True)
            if min(b[2] - b[0], b[3] - b[1]) >= min_face
        ]
        for face in faces:
            face.landmarks.setflags(write=False)
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    def raw_detect(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (x0, y0, x1, y1), scores and landmarks (N x 5 x 2) for BGR float pixels
        (1 x 3 x H x W), in their coordinates: cv::FaceDetectorYN's network and decoding."""
        height, width = pixels.shape[2:]
        pad_h = math.ceil(height / DIVISOR) * DIVISOR
        pad_w = math.ceil(width / DIVISOR) * DIVISOR
        x = F.pad(pixels, (0, pad_w - width, 0, pad_h - height))  # zeros, bottom and right
        boxes, scores, points = [], [], []
        for stride, (cls, obj, bbox, kps) in zip(STRIDES, self.model(x), strict=True):
            rows, cols = cls.shape[2:]
            score = torch.sqrt(cls.clamp(0, 1) * obj.clamp(0, 1))[0, 0].flatten()
            keep = torch.nonzero(score >= self.score_threshold).flatten()
            if not len(keep):
                continue
            r = (keep // cols).double()
            c = (keep % cols).double()
            b = bbox[0].flatten(1)[:, keep].double()
            k = kps[0].flatten(1)[:, keep].double()
            cx, cy = (c + b[0]) * stride, (r + b[1]) * stride
            w, h = torch.exp(b[2]) * stride, torch.exp(b[3]) * stride
            boxes.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1))
            points.append(
                torch.stack([(k[0::2] + c) * stride, (k[1::2] + r) * stride], 2).permute(1, 0, 2)
            )
            scores.append(score[keep].double())
        if not boxes:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        all_boxes = torch.cat(boxes).numpy()
        all_scores = torch.cat(scores).numpy()
        all_points = torch.cat(points).numpy()
        order = np.argsort(-all_scores, kind="stable")[:TOP_K]
        kept = order[nms(all_boxes[order], all_scores[order], self.nms_threshold)]
        return all_boxes[kept], all_scores[kept], all_points[kept]


class YuNetOnet:
    """YuNet finds the faces, MTCNN's O-Net places their landmarks: one 48 x 48 O-Net pass
    per face on YuNet's box instead of MTCNN's whole cascade (whose image pyramid is what
    costs). YuNet's own landmarks sit a median 7.8% of the eye distance from MTCNN's, O-Net's
    on YuNet's boxes 2.5% (benchmarks/face_detectors.py, every photo of ../shared/faces); the
    classifier learned MTCNN's.
    Boxes and scores are YuNet's. ``YuNetOnet.from_files(yunet_onnx, onet_pt, **options)``,
    options as ``YuNetDetector``'s."""

    confident_score = CONFIDENT_SCORE

    def __init__(self, yunet: YuNetDetector, onet: ONet) -> None:
        self.yunet = yunet
        self.onet = onet.eval()

    @classmethod
    def from_files(
        cls, onnx: str | os.PathLike[str], onet: str | os.PathLike[str], **options
    ) -> YuNetOnet:
        net = ONet()
        net.load_state_dict(torch.load(onet, map_location="cpu", weights_only=True))
        return cls(YuNetDetector.from_files(onnx, **options), net)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image; largest first."""
        faces = self.yunet.detect(image)
        if not faces:
            return faces
        _, landmarks = onet_on_boxes(self.onet, np.asarray(image), np.array([f.box for f in faces]))
        refined = []
        for face, points in zip(faces, landmarks, strict=True):
            points.setflags(write=False)
            refined.append(Face(box=face.box, score=face.score, landmarks=points))
        return refined

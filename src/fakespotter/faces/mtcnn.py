"""MTCNN face detector (Zhang et al. 2016) in plain torch.

Loads facenet-pytorch's state-dict files (pnet.pt, rnet.pt, onet.pt). Coordinates are
0-based pixel coordinates with exclusive right/bottom edges: a box (x0, y0, x1, y1) covers
x0 <= x < x1. Boxes are not clipped to the image; a face may reach past the border.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_FACE_SIZE = 20
PYRAMID_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)

# Tight crops (face fills the frame) are often missed; we retry on a padded image.
RETRY_PAD_FRACTION = 0.5
# Images smaller than this (short side) are upsampled before detection.
MIN_IMAGE_SIDE = 80
# When the smallest wanted face is bigger than this, shrink the image so it is this size:
# plenty for R-Net (24 px) and O-Net (48 px) crops, and much faster on big photos.
WORKING_FACE_SIZE = 48


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    box: (x0, y0, x1, y1) in image pixels. landmarks: 5 x 2 (x, y) for left eye, right eye,
    nose, left mouth corner, right mouth corner, "left" meaning smaller x in an upright face.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def rgb_image(image) -> np.ndarray:
    """``image`` as an H x W x 3 array (a detector's input); ValueError otherwise."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    return image


class MaxPool(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed on a channels-last copy, returned in the usual layout: the
    same values (a maximum is exact), but torch's CPU kernel for NCHW is several times slower
    than its channels-last one (torch 2.13), and pooling was much of MTCNN's time
    (issue #29; tests/test_faces_mtcnn.py checks the equality)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12 x 12 window, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = MaxPool(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


def _flatten_caffe(x: torch.Tensor) -> torch.Tensor:
    # The weights come from Caffe via MATLAB, whose flatten order is (W, H, C).
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement net on 24 x 24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = MaxPool(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = MaxPool(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_caffe(x)))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48 x 48 crops: score, box regression, 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = MaxPool(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = MaxPool(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = MaxPool(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # 5 x coordinates, then 5 y coordinates

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_caffe(x)))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    mode "union" uses intersection over union, "min" intersection over the smaller area.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]))
        inter = w * h
        if mode == "min":
            denom = np.minimum(areas[best], areas[rest])
        else:
            denom = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def onet_on_boxes(
    onet: ONet, image: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """O-Net on given boxes (N x 4, squared first) of an RGB image, one 48 x 48 pass each: its
    face probability (N) and its 5 landmarks (N x 5 x 2, image pixels)."""
    boxes = _squarify(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    if not len(boxes):
        return np.zeros(0), np.zeros((0, 5, 2))
    # only the part of the image the boxes cover (integer offsets: the same patches, exactly)
    image = np.asarray(image)
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(boxes[:, 0].min()) - 1, 0, w))
    y0 = int(np.clip(np.floor(boxes[:, 1].min()) - 1, 0, h))
    x1 = int(np.clip(np.ceil(boxes[:, 2].max()) + 1, x0, w))
    y1 = int(np.clip(np.ceil(boxes[:, 3].max()) + 1, y0, h))
    shift = np.array([x0, y0, x0, y0], dtype=np.float64)
    with torch.inference_mode():
        part = torch.tensor(image[y0:y1, x0:x1], dtype=torch.float32).permute(2, 0, 1)[None]
        table = _integral_image(part)
        probs, _, points = onet(_normalize(_crop_patches(table, boxes - shift, 48)))
    return probs.numpy().astype(np.float64), _onet_landmarks(boxes, points.numpy())


def _onet_landmarks(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """O-Net's 10 outputs per box (5 x, then 5 y, as fractions of the box) in image pixels,
    N x 5 x (x, y)."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    relative = np.stack([points[:, :5], points[:, 5:]], axis=2)
    return boxes[:, None, :2] + relative * size[:, None, :]


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply MTCNN box regression: offsets are fractions of the box width/height."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes[:, :4] + offsets * size


def _squarify(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = longer side)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _frozen(points: np.ndarray) -> np.ndarray:
    points = np.array(points, dtype=np.float64)
    points.setflags(write=False)
    return points


def _box(box: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


def _normalize(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125


def _integral_image(pixels: torch.Tensor) -> np.ndarray:
    """(H + 1) x (W + 1) x 3 summed-area table of a 1 x 3 x H x W image, float64."""
    image = pixels[0].permute(1, 2, 0).numpy().astype(np.float64)
    table = np.zeros((image.shape[0] + 1, image.shape[1] + 1, 3))
    table[1:, 1:] = image.cumsum(axis=0).cumsum(axis=1)
    return table


def _crop_patches(table: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Crop integer-rounded boxes, resized to size x size by area averaging (N x 3 x size x size).

    Same result as F.interpolate(mode="area") on each crop, but for all boxes at once via a
    summed-area table. Parts of a box outside the image count as black (zero), as in the
    original MTCNN, so a crop keeps its box's geometry and the regression stays consistent.
    """
    height, width = table.shape[0] - 1, table.shape[1] - 1
    ints = np.rint(boxes[:, :4]).astype(np.int64)
    x0, y0 = ints[:, 0], ints[:, 1]
    box_w = np.maximum(ints[:, 2] - x0, 1)
    box_h = np.maximum(ints[:, 3] - y0, 1)
    # Adaptive-average-pooling bins: cell i spans [floor(i*n/size), ceil((i+1)*n/size)).
    cells = np.arange(size)
    xs = x0[:, None] + (cells * box_w[:, None]) // size
    xe = x0[:, None] - (-(cells + 1) * box_w[:, None] // size)
    ys = y0[:, None] + (cells * box_h[:, None]) // size
    ye = y0[:, None] - (-(cells + 1) * box_h[:, None] // size)
    area = (ye - ys)[:, :, None] * (xe - xs)[:, None, :]  # N x size x size, unclipped
    xs, xe = np.clip(xs, 0, width), np.clip(xe, 0, width)
    ys, ye = np.clip(ys, 0, height), np.clip(ye, 0, height)
    rows_s, rows_e = ys[:, :, None], ye[:, :, None]
    cols_s, cols_e = xs[:, None, :], xe[:, None, :]
    sums = (
        table[rows_e, cols_e]
        - table[rows_s, cols_e]
        - table[rows_e, cols_s]
        + table[rows_s, cols_s]
    )
    patches = sums / area[..., None]
    return torch.from_numpy(patches.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


class MTCNN:
    """Three-stage MTCNN cascade. Use ``MTCNN.from_files(pnet, rnet, onet)``."""

    def __init__(
        self,
        pnet: PNet,
        rnet: RNet,
        onet: ONet,
        min_face_size: float = MIN_FACE_SIZE,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        factor: float = PYRAMID_FACTOR,
        retry_padded: bool = True,
        min_face_fraction: float = 0.0,
    ) -> None:
        """min_face_fraction: also ignore faces smaller than this fraction of the image's short
        side; e.g. 0.1 makes big photos much faster (P-Net then skips the fine pyramid levels).
        """
        self.pnet = pnet.eval()
        self.rnet = rnet.eval()
        self.onet = onet.eval()
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.retry_padded = retry_padded
        self.min_face_fraction = float(min_face_fraction)

    @classmethod
    def from_files(
        cls,
        pnet: str | os.PathLike[str],
        rnet: str | os.PathLike[str],
        onet: str | os.PathLike[str],
        **options,
    ) -> MTCNN:
        """Build from facenet-pytorch state-dict files; options go to ``__init__``."""
        nets = PNet(), RNet(), ONet()
        for net, path in zip(nets, (pnet, rnet, onet), strict=True):
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        return cls(*nets, **options)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Find faces in an H x W x 3 uint8 RGB image; largest face first."""
        image = rgb_image(image)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return []
        with torch.inference_mode():
            pixels = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)
            pixels = pixels.unsqueeze(0)
            boxes, scores, landmarks = self._detect_rescaled(pixels)
            if len(boxes) == 0 and self.retry_padded:
                boxes, scores, landmarks = self._detect_padded(pixels)
        faces = [
            Face(box=_box(box), score=float(score), landmarks=_frozen(points))
            for box, score, points in zip(boxes, scores, landmarks, strict=True)
        ]
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    def face_probability(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """O-Net's face probability for given boxes (N x 4, squared first) of an RGB image.

        A cheap "is this a face?" check for inputs that skip detection (aligned crops): one
        48 x 48 O-Net pass per box instead of the whole cascade.
        """
        return onet_on_boxes(self.onet, image, boxes)[0]

    # -- small-image and tight-crop handling ---------------------------------------------

    def _detect_rescaled(self, pixels: torch.Tensor):
        """Run the cascade at a working resolution, then map results back.

        Tiny images (short side < MIN_IMAGE_SIDE) are upsampled. When the smallest face we look
        for is much bigger than MTCNN needs (min_face_fraction on a big photo), the image is
        shrunk first so the pyramid does not start from millions of pixels.
        """
        height, width = pixels.shape[2:]
        short = min(height, width)
        min_face = max(self.min_face_size, self.min_face_fraction * short)
        if short < MIN_IMAGE_SIDE:
            # Keep min_face in upsampled pixels: lets faces under min_face_size be found.
            scale, mode, working_min_face = MIN_IMAGE_SIDE / short, "bicubic", min_face
        elif min_face > WORKING_FACE_SIZE:
            scale, mode, working_min_face = WORKING_FACE_SIZE / min_face, "area", WORKING_FACE_SIZE
        else:
            return self._cascade(pixels, min_face)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        resized = F.interpolate(pixels, size=size, mode=mode).clamp(0, 255)
        sy, sx = size[0] / height, size[1] / width
        boxes, scores, landmarks = self._cascade(resized, working_min_face)
        boxes = boxes / np.array([sx, sy, sx, sy])
        landmarks = landmarks / np.array([sx, sy])
        return boxes, scores, landmarks

    def _detect_padded(self, pixels: torch.Tensor):
        """Retry with an edge-replicated border, so a face filling the frame looks smaller."""
        height, width = pixels.shape[2:]
        pad_x = round(width * RETRY_PAD_FRACTION)
        pad_y = round(height * RETRY_PAD_FRACTION)
        padded = F.pad(pixels, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
        boxes, scores, landmarks = self._detect_rescaled(padded)
        boxes = boxes - np.array([pad_x, pad_y, pad_x, pad_y])
        landmarks = landmarks - np.array([pad_x, pad_y])
        return boxes, scores, landmarks

    # -- the cascade -----------------------------------------------------------------------

    def _pyramid_scales(self, height: int, width: int, min_face: float) -> list[float]:
        scale = 12.0 / min_face  # a min_face-sized face maps onto P-Net's 12 px window
        side = min(height, width) * scale
        scales = []
        while side >= 12:
            scales.append(scale)
            scale *= self.factor
            side *= self.factor
        return scales

    def _propose(self, pixels: torch.Tensor, min_face: float) -> np.ndarray:
        """Stage 1: P-Net over the pyramid. Returns N x 5 (box, score)."""
        height, width = pixels.shape[2:]
        found = []
        for scale in self._pyramid_scales(height, width, min_face):
            size = (int(height * scale + 1), int(width * scale + 1))
            probs, offsets = self.pnet(_normalize(F.interpolate(pixels, size=size, mode="area")))
            probs, offsets = probs[0].numpy(), offsets[0].numpy()
            rows, cols = np.nonzero(probs >= self.thresholds[0])
            if rows.size == 0:
                continue
            # Each output cell sees a 12 x 12 window at stride 2 in the resized image.
            # Real scale per axis differs slightly from `scale` because of the +1 rounding.
            sx, sy = size[1] / width, size[0] / height
            x0, y0 = 2 * cols / sx, 2 * rows / sy
            boxes = np.stack([x0, y0, x0 + 12 / sx, y0 + 12 / sy], axis=1)
            # Columns: box (4), score, regression offsets (4).
            found_here = np.concatenate(
                [boxes, probs[rows, cols][:, None], offsets[:, rows, cols].T], axis=1
            )
            found.append(found_here[nms(found_here[:, :4], found_here[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        regressed = _squarify(_regress(boxes[:, :4], boxes[:, 5:9]))
        return np.concatenate([regressed, boxes[:, 4:5]], axis=1)

    def _cascade(
        self, pixels: torch.Tensor, min_face: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P-Net, R-Net, O-Net on a 1 x 3 x H x W 0-255 image: boxes, scores, landmarks."""
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        boxes = self._propose(pixels, min_face)
        if len(boxes) == 0:
            return empty

        # Stage 2: R-Net rejects most proposals and refines the rest.
        table = _integral_image(pixels)
        probs, offsets = self.rnet(_normalize(_crop_patches(table, boxes, 24)))
        passed = (probs > self.thresholds[1]).numpy()
        boxes = np.concatenate([boxes[passed, :4], probs.numpy()[passed, None]], axis=1)
        offsets = offsets.numpy()[passed]
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes, offsets = boxes[keep], offsets[keep]
        if len(boxes) == 0:
            return empty
        boxes = _squarify(_regress(boxes, offsets))

        # Stage 3: O-Net gives the final score, box and landmarks.
        probs, offsets, points = self.onet(_normalize(_crop_patches(table, boxes, 48)))
        passed = (probs > self.thresholds[2]).numpy()
        boxes, scores = boxes[passed], probs.numpy()[passed]
        offsets, points = offsets.numpy()[passed], points.numpy()[passed]
        if len(boxes) == 0:
            return empty
        landmarks = _onet_landmarks(boxes, points)
        boxes = _regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], scores[keep], landmarks[keep]

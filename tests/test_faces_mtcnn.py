"""MTCNN: NMS on hand-made boxes, and detection on a real photo with the cached weights."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakespotter.faces.io import load_image
from fakespotter.faces.mtcnn import MTCNN, Face, nms

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"  # skimage.data.astronaut(), NASA, PD
# Where the face is in astronaut.jpg (checked by eye and against facenet-pytorch's MTCNN).
ASTRONAUT_BOX = (180.0, 60.0, 268.0, 174.0)
ASTRONAUT_LANDMARKS = np.array(
    [[205.0, 101.0], [248.0, 103.5], [225.0, 129.0], [202.0, 140.0], [246.0, 142.5]]
)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best of the first cluster
            [1, 1, 11, 11],  # 1: IoU 81/119 = 0.68 with box 0
            [20, 20, 30, 30],  # 2: separate
            [0, 0, 10, 5],  # 3: inside box 0, IoU 0.5
        ],
        dtype=float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.6).tolist() == [3, 0, 2]
    # Box 0 (IoU 0.5 with box 3) goes; box 1 overlaps box 3 by only 36/114 and stays.
    assert nms(boxes, scores, 0.4).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.3).tolist() == [3, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 0, 1, 2]


def test_nms_min_mode_suppresses_nested_boxes():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30], [200, 200, 210, 210]], dtype=float)
    scores = np.array([0.9, 0.8, 0.5])
    assert nms(boxes, scores, 0.7, mode="union").tolist() == [0, 1, 2]  # IoU only 0.04
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [0, 2]  # fully inside


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    same = np.array([[5, 5, 15, 15]] * 3, dtype=float)
    assert nms(same, np.array([0.1, 0.3, 0.2]), 0.5).tolist() == [1]
    flat = np.array([[0, 0, 0, 10], [0, 0, 0, 10]], dtype=float)  # zero area: never overlap
    assert sorted(nms(flat, np.array([0.5, 0.6]), 0.5).tolist()) == [0, 1]


@functools.lru_cache(maxsize=1)
def load_detector(pnet: Path, rnet: Path, onet: Path) -> MTCNN:
    return MTCNN.from_files(pnet, rnet, onet)


@pytest.fixture
def detector(weight_file) -> MTCNN:
    return load_detector(
        weight_file("mtcnn_pnet"), weight_file("mtcnn_rnet"), weight_file("mtcnn_onet")
    )


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(ASTRONAUT)


def check_plausible(face: Face) -> None:
    x0, y0, x1, y1 = face.box
    points = face.landmarks
    assert points.shape == (5, 2)
    assert 0.7 < face.score <= 1.0
    assert ((points[:, 0] > x0) & (points[:, 0] < x1)).all()
    assert ((points[:, 1] > y0) & (points[:, 1] < y1)).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_finds_the_astronaut(detector: MTCNN, astronaut: np.ndarray):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    check_plausible(face)
    assert face.score > 0.99
    np.testing.assert_allclose(face.box, ASTRONAUT_BOX, atol=6)
    np.testing.assert_allclose(face.landmarks, ASTRONAUT_LANDMARKS, atol=4)


def test_face_is_frozen(detector: MTCNN, astronaut: np.ndarray):
    face = detector.detect(astronaut)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.score = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 1.0


def test_blank_image_has_no_face(detector: MTCNN):
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((5, 7, 3), np.uint8)) == []


def test_rejects_wrong_shape(detector: MTCNN):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((50, 50), np.uint8))


def crop_and_resize(image: np.ndarray, box, size: int) -> tuple[np.ndarray, float]:
    crop = Image.fromarray(image).crop(tuple(int(v) for v in box))
    scale = size / crop.width
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC)), scale


def test_tight_crop_found_with_padded_retry(detector: MTCNN, astronaut: np.ndarray):
    # The face fills the frame, like UTKFace crops: the plain cascade misses it.
    box = (192, 85, 258, 151)
    tight, scale = crop_and_resize(astronaut, box, 200)
    no_retry = MTCNN(detector.pnet, detector.rnet, detector.onet, retry_padded=False)
    assert no_retry.detect(tight) == []
    faces = detector.detect(tight)
    assert len(faces) == 1
    check_plausible(faces[0])
    # Landmarks come back in the crop's coordinates (cut-off mouth corners are less exact).
    expected = (ASTRONAUT_LANDMARKS - np.array(box[:2])) * scale
    np.testing.assert_allclose(faces[0].landmarks, expected, atol=0.1 * 200)
    np.testing.assert_allclose(faces[0].landmarks[:2], expected[:2], atol=0.05 * 200)


def test_tiny_image_is_upsampled(detector: MTCNN, astronaut: np.ndarray):
    box = (150, 40, 300, 190)
    small, scale = crop_and_resize(astronaut, box, 56)
    faces = detector.detect(small)
    assert len(faces) == 1
    check_plausible(faces[0])
    expected = (ASTRONAUT_LANDMARKS - np.array(box[:2])) * scale
    np.testing.assert_allclose(faces[0].landmarks, expected, atol=0.06 * 56)


def test_several_faces_sorted_by_area(detector: MTCNN, astronaut: np.ndarray):
    crop = Image.fromarray(astronaut).crop((150, 40, 300, 190))
    canvas = Image.new("RGB", (480, 240), (128, 128, 128))
    canvas.paste(crop.resize((75, 75), Image.Resampling.BICUBIC), (20, 80))
    canvas.paste(crop.resize((220, 220), Image.Resampling.BICUBIC), (240, 10))
    faces = detector.detect(np.asarray(canvas))
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] > 240 and faces[1].box[2] < 100


def test_min_face_fraction_shrinks_big_photos(detector: MTCNN, astronaut: np.ndarray):
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.Resampling.BICUBIC))
    nets = (detector.pnet, detector.rnet, detector.onet)
    faces = MTCNN(*nets, min_face_fraction=0.1).detect(big)  # face ~180 px, min face 102 px
    assert len(faces) == 1
    check_plausible(faces[0])
    np.testing.assert_allclose(faces[0].landmarks, ASTRONAUT_LANDMARKS * 2, atol=8)
    assert MTCNN(*nets, min_face_fraction=0.5).detect(big) == []  # min face 512 px


def test_channels_last_pooling_gives_the_same_values_and_detections(
    detector: MTCNN, astronaut: np.ndarray, weight_file
):
    """Issue #29: MTCNN pools on a channels-last copy (torch's NCHW kernel is slower); the
    values are the same to the bit, so are the faces found with the plain pooling put back."""
    import torch
    from torch import nn

    from fakespotter.faces.mtcnn import MaxPool

    x = torch.randn(7, 28, 23, 22)  # an odd side: ceil_mode's extra window
    for kernel in (2, 3):
        ours, plain = MaxPool(kernel, 2, ceil_mode=True), nn.MaxPool2d(kernel, 2, ceil_mode=True)
        assert torch.equal(ours(x), plain(x)) and ours(x).is_contiguous()
    photo = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # two faces
    fast = detector.detect(photo)
    plain_detector = MTCNN.from_files(
        *(weight_file(f"mtcnn_{n}") for n in ("pnet", "rnet", "onet"))
    )
    for net in (plain_detector.pnet, plain_detector.rnet, plain_detector.onet):
        for name, module in list(net.named_children()):
            if isinstance(module, MaxPool):
                setattr(net, name, nn.MaxPool2d(module.kernel_size, module.stride, ceil_mode=True))
    plain_faces = plain_detector.detect(photo)
    assert len(fast) == len(plain_faces) == 2
    for a, b in zip(fast, plain_faces, strict=True):
        assert a.box == b.box and a.score == b.score
        np.testing.assert_array_equal(a.landmarks, b.landmarks)

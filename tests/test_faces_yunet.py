"""fakespotter.faces.yunet: the YuNet port reads its ONNX files (written here with random
weights) exactly, refuses others in one line, and on the real weights gives what OpenCV's
cv2.FaceDetectorYN gave (tests/data/reference/yunet.json, made by tools/verify_yunet.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_writer import yunet_file

from fakespotter.faces import load_image
from fakespotter.faces.registry import FACE_DETECTORS
from fakespotter.faces.yunet import YuNet, YuNetDetector, load_model

DATA = Path(__file__).parent / "data"
TOOLS = Path(__file__).resolve().parents[1] / "tools"
REFERENCE = json.loads((DATA / "reference" / "yunet.json").read_text())


def test_load_model_reads_every_weight_of_a_written_file(tmp_path):
    data, weights = yunet_file(seed=1)
    path = tmp_path / "yunet.onnx"
    path.write_bytes(data)
    model = load_model(path)
    convs = model.convs_in_graph_order()
    assert len(convs) == len(weights) == 53
    for conv, (w, b) in zip(convs, weights, strict=True):
        assert torch.equal(conv.weight, torch.from_numpy(w))
        assert torch.equal(conv.bias, torch.from_numpy(b))
    # and it runs: per stride, maps of the padded input's size over the stride
    out = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(o[0].shape[2:]) for o in out] == [(8, 12), (4, 6), (2, 3)]
    assert [o[3].shape[1] for o in out] == [10, 10, 10]


@pytest.mark.parametrize("drop", ["Resize", "Sigmoid", "Conv"])
def test_load_model_refuses_another_graph_in_one_line(tmp_path, drop):
    path = tmp_path / "other.onnx"
    path.write_bytes(yunet_file(seed=2, drop_op=drop)[0])
    with pytest.raises(ValueError) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_load_model_refuses_junk(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x08\x07\x3a\xff\xff not protobuf")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        load_model(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_model(tmp_path / "absent.onnx")


def test_random_weights_find_nothing_and_say_so_quietly():
    """Decoding copes with no score above the threshold (and with tiny images)."""
    detector = YuNetDetector(YuNet())
    assert detector.detect(np.zeros((40, 30, 3), np.uint8)) == []
    assert detector.detect(np.zeros((0, 30, 3), np.uint8)) == []
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((40, 30), np.uint8))


# -- the real weights, against OpenCV ------------------------------------------------------


@pytest.fixture
def real_detector(weight_file) -> YuNetDetector:
    return YuNetDetector.from_files(weight_file("yunet"), score_threshold=0.9)  # as OpenCV's


def _astronauts() -> dict[str, np.ndarray]:
    """The photos the reference was made from: tools/verify_yunet.py's own list."""
    spec = importlib.util.spec_from_file_location("verify_yunet", TOOLS / "verify_yunet.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.astronaut_variants()


def test_real_weights_match_opencv(real_detector):
    tol, score_tol = REFERENCE["box_tolerance_px"], REFERENCE["score_tolerance"]
    assert set(_astronauts()) == set(REFERENCE["faces"])
    for name, image in _astronauts().items():
        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)
            boxes, scores, points = real_detector.raw_detect(pixels[None].float())
        theirs = np.array(REFERENCE["faces"][name]).reshape(-1, 15)
        assert len(boxes) == len(theirs), name
        theirs = theirs[np.argsort(-theirs[:, 14], kind="stable")]  # ours: best score first
        np.testing.assert_allclose(boxes[:, :2], theirs[:, :2], atol=tol)
        np.testing.assert_allclose(boxes[:, 2:] - boxes[:, :2], theirs[:, 2:4], atol=tol)
        np.testing.assert_allclose(points.reshape(-1, 10), theirs[:, 4:14], atol=tol)
        np.testing.assert_allclose(scores, theirs[:, 14], atol=score_tol)


def test_detect_maps_a_shrunk_photo_back(real_detector):
    """A big photo is searched at a working size and its faces come back in its pixels."""
    image = _astronauts()["astronaut"]
    native = real_detector.detect(image)
    big = np.repeat(np.repeat(image, 3, axis=0), 3, axis=1)  # 1536 px: shrunk to find faces
    shrinking = YuNetDetector(real_detector.model, min_face_fraction=0.05)
    found = shrinking.detect(big)
    assert len(native) == len(found) == 1
    # YuNet's own landmarks move by up to ~5% of the face between input sizes (measured on
    # this photo from 384 to 1024 px); a wrong mapping back would be off by the whole scale
    width = 3 * (native[0].box[2] - native[0].box[0])
    np.testing.assert_allclose(found[0].landmarks, 3 * native[0].landmarks, atol=0.06 * width)
    np.testing.assert_allclose(found[0].box, 3 * np.array(native[0].box), atol=0.06 * width)


def test_detect_retries_with_a_border_in_the_photos_pixels(monkeypatch):
    """No face: once more with a border, whose faces come back in the photo's pixels."""
    detector = YuNetDetector(YuNet())
    calls = []

    def raw_detect(pixels):
        calls.append(tuple(pixels.shape[2:]))
        if len(calls) == 1:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return np.array([[40.0, 45.0, 90.0, 100.0]]), np.array([0.95]), np.full((1, 5, 2), 60.0)

    monkeypatch.setattr(detector, "raw_detect", raw_detect)
    (face,) = detector.detect(np.zeros((60, 80, 3), np.uint8))
    assert calls == [(60, 80), (140, 160)]  # a border of half the long side, 40 px
    assert face.box == (0.0, 5.0, 50.0, 60.0) and (face.landmarks == 20.0).all()


def test_yunet_is_a_registered_face_detector():
    assert "yunet" in FACE_DETECTORS and "mtcnn" in FACE_DETECTORS
    assert FACE_DETECTORS["yunet"].weight_files[0].licence.startswith("MIT")


# -- YuNet's faces, O-Net's landmarks -----------------------------------------------------


def test_yunet_onet_keeps_yunets_faces_and_takes_onets_landmarks(monkeypatch):
    from fakespotter.faces.mtcnn import ONet, onet_on_boxes
    from fakespotter.faces.yunet import YuNetOnet

    torch.manual_seed(0)
    finder = YuNetDetector(YuNet())
    both = YuNetOnet(finder, ONet())
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    assert both.detect(image) == []  # random YuNet weights: nothing found, nothing refined
    boxes = [(10.0, 12.0, 60.0, 70.0), (70.0, 5.0, 110.0, 50.0)]
    from fakespotter.faces.mtcnn import Face

    found = [Face(b, 0.85, np.zeros((5, 2))) for b in boxes]
    monkeypatch.setattr(finder, "detect", lambda image: found)
    faces = both.detect(image)
    _, expected = onet_on_boxes(both.onet, image, np.array(boxes))
    assert [f.box for f in faces] == boxes and [f.score for f in faces] == [0.85, 0.85]
    for face, points in zip(faces, expected, strict=True):
        np.testing.assert_array_equal(face.landmarks, points)
        assert not face.landmarks.flags.writeable
    assert onet_on_boxes(both.onet, image, np.zeros((0, 4)))[1].shape == (0, 5, 2)


def test_yunet_onet_landmarks_sit_nearer_mtcnns(weight_file):
    """The reason for the pair: on the astronaut, O-Net on YuNet's box puts the landmarks
    closer to where the full MTCNN cascade puts them than YuNet itself does."""
    from fakespotter.faces.registry import get_face_detector

    for name in ("yunet", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    image = load_image(DATA / "astronaut.jpg")
    mtcnn = get_face_detector("mtcnn").load(progress=False).detect(image)[0].landmarks
    yunet = get_face_detector("yunet").load(progress=False).detect(image)[0]
    both = get_face_detector("yunet-onet").load(progress=False).detect(image)[0]
    assert both.box == yunet.box
    own, refined = np.abs(yunet.landmarks - mtcnn).max(), np.abs(both.landmarks - mtcnn).max()
    assert refined < own

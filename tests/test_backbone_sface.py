"""SFace port: shape and wiring without weights, reference embeddings from onnxruntime with them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fakespotter.backbones import sface

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"


def test_random_init_forward_gives_finite_embeddings():
    torch.manual_seed(0)
    model = sface.SFace().eval()
    with torch.no_grad():
        embeddings = model(torch.randn(2, 3, sface.INPUT_SIZE, sface.INPUT_SIZE))
    assert embeddings.shape == (2, sface.EMBEDDING_DIM)
    assert torch.isfinite(embeddings).all()


def test_activations_name_every_conv_tap_and_its_prelu():
    modules = dict(sface.SFace().named_modules())
    taps = [name for name, module in modules.items() if isinstance(module, (nn.Conv2d, nn.Linear))]
    assert len(taps) == 28  # 27 convs and the fc layer
    # every conv is followed by BN + PReLU; the fc layer only by a BatchNorm
    assert sorted(sface.ACTIVATIONS) == sorted(name for name in taps if name != "pre_fc1")
    for activation in sface.ACTIVATIONS.values():
        assert isinstance(modules[activation], nn.PReLU)


def test_preprocess_keeps_rgb_order_and_scales_to_unit_range():
    images = np.zeros((1, sface.INPUT_SIZE, sface.INPUT_SIZE, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 255, 128, 0
    tensor = sface.preprocess(images)
    assert tensor.dtype == torch.float32 and tensor.shape == (1, 3, 112, 112)
    assert tensor[0, :, 5, 7].tolist() == [(255 - 127.5) / 128, (128 - 127.5) / 128, -127.5 / 128]
    with pytest.raises(ValueError):
        sface.preprocess(images[:, :100])


def test_alignment_template_puts_eyes_above_nose_above_mouth():
    left_eye, right_eye, nose, left_mouth, right_mouth = sface.ALIGNMENT_TEMPLATE
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def _reference_crops() -> tuple[np.ndarray, dict]:
    record = json.loads((REFERENCE_DIR / "sface.json").read_text())
    strip = np.asarray(Image.open(REFERENCE_DIR / "sface_inputs.png").convert("RGB"))
    size = sface.INPUT_SIZE
    crops = np.stack([strip[:, i * size : (i + 1) * size] for i in range(strip.shape[1] // size)])
    return crops, record


def test_reference_embeddings_match_onnxruntime(weight_file):
    path = weight_file("sface")
    crops, record = _reference_crops()
    assert record["backbone"] == "sface" and len(record["embeddings"]) == len(crops) == 3
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["weights_sha256"]
    model = sface.load_model(path)
    assert not model.training
    with torch.no_grad():
        embeddings = model(sface.preprocess(crops)).numpy()
    expected = np.array(record["embeddings"], dtype=np.float32)
    assert np.abs(embeddings - expected).max() <= 1e-4
    # the two astronaut crops are the same face, the test card is not
    cosine = expected @ expected.T / np.outer(*[np.linalg.norm(expected, axis=1)] * 2)
    assert cosine[0, 1] > cosine[0, 2]


def test_truncated_weight_file_raises_value_error(weight_file, tmp_path):
    data = weight_file("sface").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        sface.load_model(truncated)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (payloads here are < 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize("kind", ["empty", "text", "random0", "random1", "random2", "other_onnx"])
def test_garbage_file_raises_value_error(tmp_path, kind):
    if kind == "empty":
        data = b""
    elif kind == "text":
        data = b"this is not an onnx model\n" * 20
    elif kind == "other_onnx":  # a readable ModelProto whose graph is a single Relu
        node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Relu")
        data = _field(7, _field(1, node))
    else:
        data = np.random.default_rng(int(kind[-1])).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        sface.load_model(path)


def test_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError):
        sface.load_model(tmp_path / "absent.onnx")

"""dlib face-recognition ResNet port: shape, reference descriptors from dlib itself, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fakespotter.backbones import dlib_resnet

REFERENCE = Path(__file__).parent / "data" / "reference"


def test_random_model_gives_128_finite_values():
    torch.manual_seed(0)
    model = dlib_resnet.DlibFaceResNet().eval()
    crops = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    with torch.no_grad():
        out = model(dlib_resnet.preprocess(crops))
    assert out.shape == (2, dlib_resnet.EMBEDDING_DIM)
    assert torch.isfinite(out).all()


def test_preprocess_matches_dlib_input_layer():
    crops = np.zeros((1, 150, 150, 3), dtype=np.uint8)
    crops[0, 0, 0] = (255, 0, 128)
    x = dlib_resnet.preprocess(crops)
    assert x.shape == (1, 3, 150, 150) and x.dtype == torch.float32
    means = np.float32(dlib_resnet.DEFAULT_CHANNEL_MEANS)
    assert x[0, :, 0, 0].tolist() == pytest.approx(
        [(255 - means[0]) / 256, -means[1] / 256, (128 - means[2]) / 256], abs=1e-7
    )


def test_activations_name_existing_relus():
    modules = dict(dlib_resnet.DlibFaceResNet().named_modules())
    taps = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(taps) == 30  # stem conv + 2 per each of 14 residual blocks + fc
    assert set(dlib_resnet.ACTIVATIONS) == set(taps) - {"fc"}
    assert all(isinstance(modules[a], nn.ReLU) for a in dlib_resnet.ACTIVATIONS.values())


def test_zero_extended_add_matches_dlib_shapes():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    out = dlib_resnet.add_zero_extended(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, :2, :3, :3].eq(3).all() and out[0, 2:].eq(2).all() and out[0, :, 3].eq(2).all()


def test_reference_descriptors_from_dlib(weight_file):
    model = dlib_resnet.load_model(weight_file("dlib"))
    record = json.loads((REFERENCE / "dlib.json").read_text())
    strip = np.asarray(Image.open(REFERENCE / "dlib_inputs.png").convert("RGB"))
    crops = np.stack([strip[:, i : i + 150] for i in range(0, strip.shape[1], 150)])
    expected = np.array(record["embeddings"])
    assert crops.shape[0] == expected.shape[0] == 3
    with torch.no_grad():
        got = model(dlib_resnet.preprocess(crops)).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    # dlib's descriptor is not L2-normalized
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=0.05)


def test_garbage_file_raises_value_error(tmp_path):
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"\x01\x01\x0dloss_metric_2" + bytes(range(256)) * 4)
    with pytest.raises(ValueError):
        dlib_resnet.load_model(garbage)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        dlib_resnet.load_model(empty)


def test_truncated_weights_raise_value_error(weight_file, tmp_path):
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(weight_file("dlib").read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match="truncated"):
        dlib_resnet.load_model(truncated)

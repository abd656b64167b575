"""FaceNet (Inception-ResNet-v1, Keras h5) port: shape, faithfulness to Keras, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fakespotter.backbones import facenet

REFERENCE = Path(__file__).parent / "data" / "reference"


def test_random_init_forward_gives_finite_embeddings() -> None:
    torch.manual_seed(0)
    model = facenet.InceptionResNetV1().eval()
    x = torch.randn(2, 3, facenet.INPUT_SIZE, facenet.INPUT_SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, facenet.EMBEDDING_DIM)
    assert torch.isfinite(out).all()


def test_activation_map_names_existing_relus() -> None:
    modules = dict(facenet.InceptionResNetV1().named_modules())
    taps = {n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(facenet.ACTIVATIONS) <= taps
    assert all(isinstance(modules[a], nn.ReLU) for a in facenet.ACTIVATIONS.values())
    # only the last block's up-conv (no ReLU in the original) and the bottleneck are untapped
    assert taps - set(facenet.ACTIVATIONS) == {"block8_6.conv2d_1x1", "bottleneck"}


def test_preprocess_is_per_image_standardization() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, facenet.INPUT_SIZE, facenet.INPUT_SIZE, 3), dtype=np.uint8)
    x = facenet.preprocess(images)
    assert x.shape == (2, 3, facenet.INPUT_SIZE, facenet.INPUT_SIZE) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-5)
    # channel order is kept (RGB in, RGB planes out)
    assert torch.equal(
        x[0, 0].argmax(), torch.from_numpy(images[0, :, :, 0].astype(np.int64)).argmax()
    )
    # a constant image must not divide by zero
    assert torch.isfinite(facenet.preprocess(np.full_like(images, 7))).all()


def test_matches_keras_reference_embeddings(weight_file) -> None:
    reference = json.loads((REFERENCE / "facenet.json").read_text())
    strip = np.asarray(Image.open(REFERENCE / "facenet_inputs.png").convert("RGB"))
    size = facenet.INPUT_SIZE
    crops = np.stack([strip[:, i : i + size] for i in range(0, strip.shape[1], size)])

    model = facenet.load_model(weight_file("facenet"))
    with torch.no_grad():
        ours = model(facenet.preprocess(crops)).numpy()
    expected = np.asarray(reference["embeddings"], dtype=np.float32)
    assert ours.shape == expected.shape == (3, facenet.EMBEDDING_DIM)
    assert np.abs(ours - expected).max() <= 1e-4


def test_garbage_file_raises_value_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not an HDF5 file" * 100)
    with pytest.raises(ValueError):
        facenet.load_model(garbage)


def test_h5_without_model_weights_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("something", data=np.zeros(3))
    with pytest.raises(ValueError):
        facenet.load_model(path)

"""A backbone registered from outside the package works end to end through the CLI.

The toy network below is registered in one place (the fixture) and nothing else in fakespotter
knows of it: ``train``, ``detect`` and ``evaluate`` accept ``--backbone toy`` and the model
file finds it by name. It has no weight files; its ``from_files`` builds it with a fixed seed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_noise_faces
from torch import nn

from fakespotter.backbones import BACKBONES, BackboneSpec, register_backbone, unregister_backbone
from fakespotter.cli import main

SIZE = 32


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def toy_preprocess(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def toy_trained() -> nn.Module:
    torch.manual_seed(1234)  # "the weights": the same network every time it is loaded
    return ToyNet()


TOY = BackboneSpec(
    name="toy",
    summary="a 2-conv test network, 32 px",
    input_size=SIZE,
    # ArcFace's 112 px template, scaled to the toy's crop
    alignment_template=np.array(
        [[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]]
    )
    * SIZE
    / 112,
    preprocess=toy_preprocess,
    activations={"conv1": "relu1", "conv2": "relu2"},
    batch_size=4,
    weight_files=(),
    build=ToyNet,
    from_files=toy_trained,
)


@pytest.fixture
def toy():
    register_backbone(TOY)
    try:
        yield TOY
    finally:
        unregister_backbone("toy")


def test_train_detect_evaluate_with_a_registered_backbone(tmp_path, toy, weight_file):
    for stage in ("pnet", "rnet", "onet"):  # --aligned still runs O-Net's face check
        weight_file(f"mtcnn_{stage}")
    real = write_noise_faces(tmp_path / "real", 8, smooth=False, seed=1)
    fake = write_noise_faces(tmp_path / "fake", 8, smooth=True, seed=2)
    model = tmp_path / "toy.safetensors"
    runner = CliRunner()

    result = runner.invoke(
        main,
        [
            "train",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--aligned",
            "--backbone",
            "toy",
            "--variant",
            "layer",
            "--output",
            str(model),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "toy/layer" in result.output

    from fakespotter.persistence import load_model

    det = load_model(model)
    assert det.backbone == "toy" and det.taps_ == ["conv1", "conv2", "fc"]

    result = runner.invoke(
        main, ["detect", str(fake), "--model", str(model), "--aligned", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 8
    assert all(r["error"] is None and 0.0 <= r["p_fake"] <= 1.0 for r in rows)

    result = runner.invoke(
        main,
        [
            "evaluate",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--model",
            str(model),
            "--aligned",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_real"] == report["n_fake"] == 8 and report["auc"] is not None


def test_registered_backbone_is_offered_and_then_gone(toy):
    runner = CliRunner()
    assert "toy" in runner.invoke(main, ["train", "--help"]).output
    # no weight files: nothing to list or fetch
    assert "toy" not in runner.invoke(main, ["weights", "list"]).output
    fetch = runner.invoke(main, ["weights", "fetch", "toy"])
    assert fetch.exit_code == 2 and "unknown name 'toy'" in fetch.output
    unregister_backbone("toy")
    assert "toy" not in BACKBONES
    bad = runner.invoke(main, ["train", "--real", ".", "--fake", ".", "--backbone", "toy"])
    assert bad.exit_code == 2 and "'toy' is not one of" in bad.output


def test_untrained_and_loaded_toy(toy):
    loaded = toy.load()
    assert loaded.name == "toy" and loaded.weights_sha256 == "" and loaded.batch_size == 4
    assert [t.name for t in loaded.taps()] == ["conv1", "conv2", "fc"]
    again = toy.load()
    for a, b in zip(loaded.model.parameters(), again.model.parameters(), strict=False):
        assert torch.equal(a, b)  # the fixed seed stands in for a weight file
    assert toy.untrained().input_size == SIZE

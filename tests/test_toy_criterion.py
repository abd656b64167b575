"""A coverage criterion defined here, registered in one line, is trained, used and evaluated
through the command line like a built-in one (dlib weights: skipped when not cached)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter import weights
from fakespotter.criteria import (
    CRITERIA,
    Criterion,
    register_criterion,
    unregister_criterion,
)
from fakespotter.taps import layer_sum


class FractionPositive(Criterion):
    """Per layer, the fraction of its neurons > 0; it fits nothing but a count of outputs,
    so it is its own statistics, end to end."""

    name = "toy-positive"

    def batch_stats(self, tap, out):
        import torch

        return torch.zeros(1, dtype=torch.float64)

    def fit_params(self, tap, stats, numel):
        return np.asarray(0.0)

    def n_features(self, tap):
        return 1

    def features(self, tap, out, params, scratch):
        return (layer_sum(out > 0) / tap.neurons)[:, None]


@pytest.fixture
def toy():
    register_criterion(FractionPositive)  # the one line a new criterion needs
    yield FractionPositive.name
    unregister_criterion(FractionPositive.name)


@pytest.mark.slow
def test_toy_criterion_through_the_cli(tmp_path, toy):
    from fakespotter.backbones import BACKBONES
    from fakespotter.cli import main
    from fakespotter.persistence import load_model

    if not weights.is_cached(BACKBONES["dlib"].weights):
        pytest.skip("dlib weights not cached; run `fakespotter weights fetch` first")
    real = write_noise_faces(tmp_path / "real", 10, smooth=False, seed=1)
    fake = write_noise_faces(tmp_path / "fake", 10, smooth=True, seed=2)
    model = tmp_path / "toy.safetensors"
    runner = CliRunner()
    assert toy in runner.invoke(main, ["train", "--help"]).output
    result = runner.invoke(
        main,
        [
            "train",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--backbone",
            "dlib",
            "--variant",
            toy,
            "--aligned",
            "--output",
            str(model),
        ],
    )
    assert result.exit_code == 0, result.output
    det = load_model(model)
    assert det.variant == toy and len(det.coef_) == len(det.taps_) == 30
    means = det.training_["layer_means"]  # the web page's per-layer view comes from the criterion
    assert all(0 <= v <= 1 for v in means["real"] + means["fake"])

    result = runner.invoke(
        main, ["detect", str(fake), "--model", str(model), "--aligned", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 10 and all(r["error"] is None and 0 <= r["p_fake"] <= 1 for r in rows)

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
    assert json.loads(result.stdout)["n_real"] == 10

    # unregistered, the name is refused where it would be used, with a one-line reason
    unregister_criterion(toy)
    result = runner.invoke(main, ["detect", str(fake), "--model", str(model), "--aligned"])
    assert result.exit_code == 1 and "unknown variant" in result.output
    result = runner.invoke(
        main,
        [
            "train",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--variant",
            toy,
            "--output",
            str(tmp_path / "x.safetensors"),
        ],
    )
    assert result.exit_code == 2 and toy in result.output
    register_criterion(FractionPositive)  # for the fixture's unregistering


def test_registry_refuses_bad_criteria(toy):
    with pytest.raises(ValueError, match="registered already"):
        register_criterion(FractionPositive)
    bad = type("Embedding", (FractionPositive,), {"name": "embedding"})
    with pytest.raises(ValueError, match="embedding"):
        register_criterion(bad)
    with pytest.raises(TypeError):
        register_criterion(object())
    assert list(CRITERIA)[:3] == ["layer", "channel", "kmultisection"]

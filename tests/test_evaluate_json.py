"""Issue #27 (20): `evaluate --format json` has the same keys whatever the model and the
folders (null where a number does not apply), and so has every per-source row."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fakespotter.cli import main
from fakespotter.operating_point import OperatingPoint
from fakespotter.persistence import load_model, save_model

KEYS = {
    "n_real", "n_fake", "accuracy", "real_accuracy", "fake_accuracy", "auc", "ap", "eer",
    "threshold", "real_uncertain", "fake_uncertain", "per_source", "n_no_face",
    "n_unreadable", "perturbations", "report",
}  # fmt: skip
SOURCE_KEYS = {
    "class", "folder", "n_real", "n_fake", "accuracy", "real_accuracy", "fake_accuracy", "auc",
    "ap", "eer", "real_uncertain", "fake_uncertain", "n_no_face", "n_unreadable",
}  # fmt: skip


def _evaluate(model, *folders) -> dict:
    result = CliRunner().invoke(
        main, ["evaluate", *folders, "--model", str(model), "--aligned", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_every_key_is_there_with_or_without_a_band_and_fakes(tmp_path, tiny_model):
    real, fake = str(tiny_model.parent / "real"), str(tiny_model.parent / "fake")
    banded = tmp_path / "banded.safetensors"
    det = load_model(tiny_model)
    det.set_operating_point(OperatingPoint(0.9, 0.1))
    save_model(det, banded, det.training_)
    runs = {
        "no band": _evaluate(tiny_model, "--real", real, "--fake", fake),
        "band": _evaluate(banded, "--real", real, "--fake", fake),
        "reals only": _evaluate(tiny_model, "--real", real),
    }
    for name, m in runs.items():
        assert set(m) == KEYS, name
        assert m["perturbations"] is None and m["report"] is None
        for source in m["per_source"].values():
            assert set(source) == SOURCE_KEYS, name
    assert runs["no band"]["real_uncertain"] == 0.0  # no band: none is uncertain
    assert runs["reals only"]["fake_uncertain"] is None and runs["reals only"]["auc"] is None
    assert runs["reals only"]["per_source"]["real"]["n_fake"] == 0
    m = runs["band"]
    assert 0 <= m["real_uncertain"] <= 1 and 0 <= m["fake_uncertain"] <= 1
    assert m["per_source"]["fake"]["fake_uncertain"] == m["fake_uncertain"]

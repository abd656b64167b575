"""Several named fake sources in one model (train --fake NAME=DIR ...), per-source metrics in
evaluate, and `fakespotter info`."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import train_cli, write_noise_faces

from fakespotter.cli import main
from fakespotter.persistence import load_model


def test_train_on_named_sources_and_measure_each(tmp_path, tiny_model):
    real = tiny_model.parent / "real"
    blurred = tiny_model.parent / "fake"
    other = write_noise_faces(tmp_path / "other", 8, smooth=True, seed=31)
    out = tmp_path / "two.safetensors"
    train_cli("--real", real, "--fake", f"blur={blurred}", "--fake", other, output=out)
    sources = load_model(out).training_["fake_sources"]
    assert sources == {
        "blur": {"folder": str(blurred), "n_faces": 12},
        "other": {"folder": str(other), "n_faces": 8},
    }
    assert f"--fake blur={blurred} --fake other={other}" in load_model(out).training_["command"]

    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--real",
            str(real),
            "--fake",
            f"blur={blurred}",
            "--fake",
            f"more={other}",
            "--model",
            str(out),
            "--aligned",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert set(m["per_source"]) == {"real", "blur", "more"} and m["n_fake"] == 20
    assert m["per_source"]["blur"]["n_fake"] == 12 and m["per_source"]["more"]["n_real"] == 12

    shown = CliRunner().invoke(main, ["info", "--model", str(out)])
    assert shown.exit_code == 0
    assert (
        "12 fake faces, source 'blur'" in shown.output
        and "8 fake faces, source 'other'" in shown.output
    )
    facts = json.loads(
        CliRunner().invoke(main, ["info", "--model", str(out), "--format", "json"]).stdout
    )
    assert (
        facts["backbone"] == "dlib" and facts["training"]["fake_sources"]["other"]["n_faces"] == 8
    )


def test_a_fake_source_that_is_not_a_folder_is_a_usage_error(tmp_path, tiny_model):
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--real",
            str(tiny_model.parent / "real"),
            "--fake",
            f"x={tmp_path / 'missing'}",
            "--output",
            "m",
        ],
    )
    assert result.exit_code == 2 and "does not exist" in result.output

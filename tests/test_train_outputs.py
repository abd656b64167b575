"""Issue #27 (13, 19): train, update and evaluate --report check their outputs before any
work (a full training takes minutes), and replace an existing one only with --overwrite."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter import training
from fakespotter.cli import main
from fakespotter.errors import UserError
from fakespotter.trainingset import FORMAT


@pytest.fixture
def no_work(monkeypatch):
    """Face finding, the first work every command does, stops the command instead."""

    def stop(*args, **kwargs):
        raise UserError("the work began")

    monkeypatch.setattr(training, "largest_faces", stop)


@pytest.fixture
def folders(tmp_path):
    return (
        write_noise_faces(tmp_path / "real", 2, smooth=False, seed=1),
        write_noise_faces(tmp_path / "fake", 2, smooth=True, seed=2),
    )


def _train(folders, output, *extra):
    real, fake = folders
    return CliRunner().invoke(
        main,
        ["train", "--real", str(real), "--fake", str(fake), "--backbone", "dlib", "--aligned",
         "--output", str(output), *extra],
    )  # fmt: skip


def _update(tmp_path, folders, output, *extra):
    model, features = tmp_path / "model.safetensors", tmp_path / "features.npz"
    for f in (model, features):
        f.write_bytes(b"never read: the outputs are checked first")
    return CliRunner().invoke(
        main,
        ["update", "--model", str(model), "--features", str(features), "--fake",
         f"new={folders[1]}", "--aligned", "--output", str(output), *extra],
    )  # fmt: skip


def _one_line(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert text in result.output and "Traceback" not in result.output
    assert "the work began" not in result.output
    assert result.output.count("Error:") == 1


def test_an_output_in_a_missing_folder_is_refused_before_any_work(tmp_path, folders, no_work):
    missing = tmp_path / "missing-dir" / "m.safetensors"
    _one_line(_train(folders, missing), f"{tmp_path / 'missing-dir'} does not exist")
    _one_line(_update(tmp_path, folders, missing), "does not exist")
    ok = tmp_path / "m.safetensors"
    _one_line(
        _train(folders, ok, "--save-features", str(missing.with_suffix(".npz"))),
        "--save-features",
    )
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    _one_line(_train(folders, not_a_folder / "m.safetensors"), "is not a folder")
    same = _train(folders, ok, "--save-features", str(ok))
    assert same.exit_code == 2 and "the same file" in same.output


def _model_like(path: Path) -> Path:
    """A file that begins as a fakespotter model file does (its header)."""
    header = json.dumps({"__metadata__": {"fakespotter": "{}"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def _features_like(path: Path) -> Path:
    np.savez(path, meta=np.array(json.dumps({"format": FORMAT})))
    return path


def test_an_existing_output_is_refused_without_overwrite(tmp_path, folders, no_work):
    model = _model_like(tmp_path / "old.safetensors")
    features = _features_like(tmp_path / "old.npz")
    before = model.read_bytes(), features.read_bytes()
    for result in (
        _train(folders, model),
        _update(tmp_path, folders, model),
        _train(folders, tmp_path / "new.safetensors", "--save-features", str(features)),
    ):
        _one_line(result, "exists; pass --overwrite to replace it")
    assert (model.read_bytes(), features.read_bytes()) == before
    # with --overwrite the command goes on (train: to its work; update: to reading the model)
    result = _train(folders, model, "--overwrite", "--save-features", str(features))
    assert result.exit_code == 1 and "the work began" in result.output, result.output
    result = _update(tmp_path, folders, model, "--overwrite")
    assert result.exit_code == 1 and "not a fakespotter model file" in result.output


def test_a_file_of_another_kind_is_never_replaced(tmp_path, folders, no_work):
    notes = tmp_path / "notes.txt"
    notes.write_text("my own notes")
    for result in (
        _train(folders, notes, "--overwrite"),
        _train(folders, tmp_path / "m.safetensors", "--save-features", str(notes), "--overwrite"),
    ):
        _one_line(result, "is not a fakespotter output; will not overwrite it")
    assert notes.read_text() == "my own notes"


def test_a_report_folder_is_replaced_only_with_overwrite(tmp_path, folders, no_work):
    pytest.importorskip("matplotlib", reason="the 'report' extra (matplotlib) is not installed")
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text('{"overall": {}}')
    args = ["evaluate", "--real", str(folders[0]), "--aligned", "--report", str(report)]
    _one_line(CliRunner().invoke(main, args), "exists; pass --overwrite to replace it")
    assert (report / "metrics.json").read_text() == '{"overall": {}}'
    again = CliRunner().invoke(main, [*args, "--overwrite", "--model", str(tmp_path / "none")])
    assert "exists" not in again.output  # past the check (then: no such model file)
    (report / "metrics.json").write_text("my own numbers")  # a folder of other things
    again = CliRunner().invoke(main, [*args, "--overwrite"])
    _one_line(again, "is not a fakespotter output")


@pytest.mark.slow
def test_train_replaces_a_model_with_overwrite(tmp_path, tiny_model):
    from fakespotter.persistence import load_model

    folders = (tiny_model.parent / "real", tiny_model.parent / "fake")
    out = tmp_path / "m.safetensors"
    out.write_bytes(tiny_model.read_bytes())
    result = _train(folders, out, "--variant", "layer", "--taps", "3", "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(load_model(out).taps_) == 3

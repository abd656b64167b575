"""A --model path that is no regular file (a FIFO, /dev/zero, /dev/urandom) or one too big to
be a model is refused in one line before anything reads it: reading a FIFO waits for a
writer forever, and hashing /dev/zero never ends (issue #27 item 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakespotter import modelfile
from fakespotter.cli import main
from fakespotter.modelfile import ModelFileError, model_id

# A regression would hang; the timeout turns it into a failure (pytest-timeout, as the Ray
# tests use it).
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fifo(tmp_path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("this system has no FIFOs")
    path = tmp_path / "model.safetensors"
    os.mkfifo(path)
    return path


def _not_models(fifo: Path) -> list[Path]:
    paths = [fifo] + [Path(p) for p in ("/dev/zero", "/dev/urandom") if os.path.exists(p)]
    return paths


def test_model_id_and_load_refuse_what_is_no_regular_file(fifo, tmp_path):
    for path in _not_models(fifo):
        with pytest.raises(ModelFileError, match="not a regular file") as info:
            model_id(path)
        assert "\n" not in str(info.value)
        with pytest.raises(ModelFileError, match="not a regular file"):
            modelfile.load(path, {"a": str}, lambda meta: {})
    with pytest.raises(ModelFileError, match="not a regular file"):
        model_id(tmp_path)  # a folder


def test_model_id_refuses_a_file_too_big_to_be_a_model(tmp_path, monkeypatch):
    path = tmp_path / "big.safetensors"
    path.write_bytes(b"x" * 1000)
    monkeypatch.setattr(modelfile, "MAX_FILE_BYTES", 999)
    with pytest.raises(ModelFileError, match="more than the 999 allowed"):
        model_id(path)
    monkeypatch.setattr(modelfile, "MAX_FILE_BYTES", 1000)
    assert len(model_id(path)) == 16


@pytest.mark.parametrize("command", ["detect", "evaluate", "info", "scan"])
def test_cli_refuses_a_model_that_is_no_regular_file_in_one_line(fifo, tmp_path, command):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in _not_models(fifo):
        args = {
            "detect": ["detect", str(photos)],
            "evaluate": ["evaluate", "--real", str(photos)],
            "info": ["info"],
            "scan": ["scan", str(photos), "--output", str(tmp_path / "out")],
        }[command]
        result = CliRunner().invoke(main, [*args, "--model", str(path)])
        assert result.exit_code != 0, result.output
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], result.output
        assert "not a regular file" in lines[0], result.output


def test_serve_refuses_a_model_that_is_no_regular_file(fifo):
    pytest.importorskip("fastapi")
    from fakespotter.serve.app import create_app

    for path in _not_models(fifo):
        with pytest.raises(ModelFileError, match="not a regular file"):
            create_app(path)

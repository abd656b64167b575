"""The Python API (issue #30): `fakespotter.load()` then `detect(...)` gives the rows `fakespotter
detect --format json` prints, from a path, an array or file bytes; bad input is a row with an
error (a file) or a ValueError (an array that is no image)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import train_cli, write_noise_faces
from PIL import Image

import fakespotter
from fakespotter.api import ARRAY_NAME, BYTES_NAME
from fakespotter.cli import main


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    return sorted(write_noise_faces(tmp_path_factory.mktemp("api") / "c", 3, False, 7).iterdir())


def cli_rows(model, files) -> list[dict]:
    args = ["detect", *map(str, files), "--aligned", "--model", str(model), "--format", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 4), result.output
    return json.loads(result.stdout)


def same_rows(got: list[dict], want: list[dict], path: str | None = None) -> None:
    """Equal rows; scores to float rounding (a face scored alone or in a batch of three)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        assert g["path"] == (path or w["path"])
        assert g["p_fake"] == pytest.approx(w["p_fake"], rel=1e-6)
        assert g["novelty"] == pytest.approx(w["novelty"], abs=1e-3)
        rest = set(g) - {"path", "p_fake", "novelty"}
        assert {k: g[k] for k in rest} == {k: w[k] for k in rest}


def test_detect_gives_the_cli_rows_from_a_path_an_array_and_bytes(tiny_model, crops):
    m = fakespotter.load(tiny_model, aligned=True)
    want = cli_rows(tiny_model, crops)
    same_rows([r for f in crops for r in m.detect(f)], want)
    same_rows(list(m.detect_many(crops)), want)
    array = np.asarray(Image.open(crops[0]).convert("RGB"))
    same_rows(m.detect(array), want[:1], ARRAY_NAME)
    same_rows(m.detect(crops[0].read_bytes()), want[:1], BYTES_NAME)


def test_bad_inputs(tiny_model, tmp_path):
    m = fakespotter.load(tiny_model, aligned=True)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    [row] = m.detect(broken)
    assert row["error"] and row["p_fake"] is None
    [row] = m.detect(b"not an image either")
    assert row["error"] and row["path"] == BYTES_NAME
    [row] = m.detect(np.zeros((3000, 3000, 3), np.uint8), max_pixels=1000)
    assert "too large" in row["error"]
    with pytest.raises(ValueError, match="uint8"):
        m.detect(np.zeros((96, 96, 3), np.float32))
    with pytest.raises(ValueError, match="H x W"):
        m.detect(np.zeros((96, 96, 2), np.uint8))


def test_load_without_a_path_is_the_shipped_model(weight_file):
    from fakespotter.persistence import default_model_path

    weight_file("sface")
    m = fakespotter.load()
    assert m.path == str(default_model_path()) and m.detector.backbone == "sface"


@pytest.mark.slow
def test_the_readme_one_liner_prints_the_cli_rows(weight_file):
    """Issue #30's line, as written: `python -c "import fakespotter; print(fakespotter.load()
    .detect('tests/data/astronaut.jpg'))"` prints the rows `fakespotter detect ... --format json`
    gives (the shipped model, MTCNN on a real photo)."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    for name in ("sface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "yunet"):
        weight_file(name)  # the network and every built-in face detector's files
    root = Path(__file__).resolve().parents[1]
    code = "import fakespotter; print(fakespotter.load().detect('tests/data/astronaut.jpg'))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    printed = ast.literal_eval(done.stdout.strip())
    result = CliRunner().invoke(
        main, ["detect", str(root / "tests/data/astronaut.jpg"), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    want = json.loads(result.stdout)
    for row in want:
        row["path"] = "tests/data/astronaut.jpg"
    assert len(printed) == 1
    same_rows(printed, want)


def test_train_in_python_is_the_train_command(tmp_path, crops, weight_file):
    """fakespotter.train and `fakespotter train` are one path: the same faces and options give
    models that score alike and record the same training."""
    from fakespotter.persistence import load_model

    weight_file("dlib")
    real = write_noise_faces(tmp_path / "real", 12, smooth=False, seed=1)
    fake = write_noise_faces(tmp_path / "fake", 12, smooth=True, seed=2)
    options = {"backbone": "dlib", "variant": "layer", "aligned": True}
    model = fakespotter.train({"noise": real}, fake, tmp_path / "py.safetensors", **options)
    train_cli("--real", f"noise={real}", "--fake", fake, output=tmp_path / "cli.safetensors")
    got = list(model.detect_many(crops))
    want = cli_rows(tmp_path / "cli.safetensors", crops)
    assert got[0]["model"] != want[0]["model"]  # two files (their dates differ)
    same_rows([{**r, "model": None} for r in got], [{**r, "model": None} for r in want])
    assert model.record is not None and model.record.n_real == model.record.n_fake == 12
    info = {
        name: load_model(tmp_path / name).training_
        for name in ("py.safetensors", "cli.safetensors")
    }
    for key in ("real_sources", "fake_sources", "n_real", "n_fake", "aligned", "augment"):
        assert info["py.safetensors"][key] == info["cli.safetensors"][key], key
    assert list(info["py.safetensors"]["real_sources"]) == ["noise"]
    assert info["py.safetensors"]["command"] == "fakespotter.train (Python)"


def test_train_in_python_refuses_bad_input_in_one_line(tmp_path):
    from fakespotter.errors import UserError

    folder = write_noise_faces(tmp_path / "faces", 2, smooth=False, seed=3)
    import shutil

    from fakespotter.persistence import default_model_path

    shutil.copy(default_model_path(), tmp_path / "taken.safetensors")  # a model: replaceable
    (tmp_path / "notes.safetensors").write_text("the user's own file")  # never replaced
    notes = {"overwrite": True}
    cases = [
        ((tmp_path / "nowhere", folder, tmp_path / "m.safetensors"), {}, "is not a folder"),
        ((folder, folder, tmp_path / "taken.safetensors"), {}, "exists; pass overwrite=True"),
        ((folder, folder, tmp_path / "notes.safetensors"), notes, "not a fakespotter output"),
        ((folder, folder, tmp_path / "no" / "m.safetensors"), {}, "no.*does not exist"),
        ((folder, {"real": folder}, tmp_path / "m.safetensors"), {}, "names real photos"),
        ((folder, folder, tmp_path / "m.safetensors"), {"val_real": folder}, "go together"),
    ]
    for args, options, message in cases:
        with pytest.raises(UserError, match=message):
            fakespotter.train(*args, **options)

"""The command line end to end on images made here (real weights: skipped when not cached)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter.cli import EXIT_INPUTS_FAILED, main
from fakespotter.rows import FIELDS

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"


@pytest.fixture
def trained(tiny_model, tmp_path) -> Path:
    """conftest's tiny model, with its training folders linked into this test's tmp_path."""
    for label in ("real", "fake"):
        (tmp_path / label).symlink_to(tiny_model.parent / label)
    return tiny_model


def test_train_stores_what_the_web_page_needs(trained):
    from fakespotter.persistence import load_model

    model = load_model(trained)
    means = model.training_["layer_means"]  # per-layer class averages for the page's chart
    assert len(means["layers"]) == len(means["real"]) == len(means["fake"]) == 30
    assert model.training_["n_real"] == 12 and model.training_["command"].startswith(
        "fakespotter train"
    )


@pytest.mark.slow
def test_train_detect_evaluate(tmp_path, trained):
    (tmp_path / "mixed").mkdir()
    write_noise_faces(tmp_path / "mixed" / "sub", 3, smooth=True, seed=5)
    (tmp_path / "mixed" / "broken.jpg").write_bytes(b"not an image at all")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "detect",
            str(tmp_path / "mixed"),
            str(tmp_path / "absent.png"),
            "--model",
            str(trained),
            "--aligned",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == EXIT_INPUTS_FAILED, result.output  # two inputs have no result
    rows = json.loads(result.stdout)
    assert [Path(r["path"]).name for r in rows] == [
        "broken.jpg",
        "000.png",
        "001.png",
        "002.png",
        "absent.png",
    ]
    assert list(rows[0]) == FIELDS
    for r in rows[1:4]:
        assert r["error"] is None and r["face"] == 0 and r["label"] == "fake"
        assert 0.5 <= r["p_fake"] <= 1 and r["box"] == [0.0, 0.0, 96.0, 96.0]
    for r in (rows[0], rows[4]):
        assert r["p_fake"] is None and r["label"] is None and r["face"] is None and r["error"]

    out = tmp_path / "rows.csv"
    result = runner.invoke(
        main,
        [
            "detect",
            str(tmp_path / "mixed"),
            "--model",
            str(trained),
            "--aligned",
            "--format",
            "csv",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == EXIT_INPUTS_FAILED  # broken.jpg
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(table) == 4 and table[1]["label"] == "fake"

    result = runner.invoke(
        main,
        [
            "evaluate",
            "--real",
            str(tmp_path / "real"),
            "--fake",
            str(tmp_path / "fake"),
            "--model",
            str(trained),
            "--aligned",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    for key in (
        "n_real",
        "n_fake",
        "n_no_face",
        "accuracy",
        "real_accuracy",
        "fake_accuracy",
        "auc",
        "ap",
        "eer",
    ):
        assert key in m
    assert m["n_real"] == 12 and m["n_fake"] == 12 and m["auc"] > 0.9

    result = runner.invoke(
        main,
        [
            "evaluate",
            "--real",
            str(tmp_path / "real"),
            "--model",
            str(trained),
            "--aligned",
            "--format",
            "json",
        ],
    )
    m = json.loads(result.stdout)
    assert m["n_fake"] == 0 and m["auc"] is None and m["real_accuracy"] > 0.5


def test_user_mistakes_give_one_line_errors(tmp_path, trained):
    runner = CliRunner()
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"garbage")
    result = runner.invoke(main, ["detect", str(ASTRONAUT), "--model", str(bad_model)])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["detect", str(tmp_path / "empty"), "--model", str(trained)])
    assert result.exit_code == EXIT_INPUTS_FAILED and "no image or video files" in result.stderr
    result = runner.invoke(
        main,
        [
            "train",
            "--real",
            str(tmp_path),
            "--fake",
            f"other={tmp_path}",
            "--output",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 1 and "Error:" in result.output


def test_detect_finds_the_astronaut_with_default_model(weight_file):
    for name in ("facenet", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    from fakespotter.persistence import default_model_path

    try:
        default_model_path()
    except FileNotFoundError:
        pytest.skip("no shipped default model in this checkout")
    result = CliRunner().invoke(main, ["detect", str(ASTRONAUT), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["face"] == 0 and 0.0 <= rows[0]["p_fake"] <= 1.0
    x0, y0, x1, y1 = rows[0]["box"]
    assert 150 < (x0 + x1) / 2 < 280 and 60 < (y0 + y1) / 2 < 200  # her face, upper middle


@pytest.mark.slow
def test_evaluate_writes_a_report(tmp_path, trained):
    report = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--real",
            str(tmp_path / "real"),
            "--fake",
            str(tmp_path / "fake"),
            "--model",
            str(trained),
            "--aligned",
            "--format",
            "json",
            "--report",
            str(report),
            "--perturb",
            "jpeg:50,blur:1",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["overall"]["n_real"] == 12 and metrics["overall"]["n_fake"] == 12
    assert [row["perturbation"] for row in metrics["perturbations"]][:3] == [
        "none",
        "jpeg:50",
        "blur:1",
    ]
    assert len(metrics["layers"]["names"]) == 30  # dlib: one entry per tapped layer
    for name in (
        "report.md",
        "report.html",
        "roc.png",
        "scores.png",
        "layers.png",
        "perturbations.png",
    ):
        assert (report / name).stat().st_size > 1000, name
    bad = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--real",
            str(tmp_path / "real"),
            "--model",
            str(trained),
            "--perturb",
            "jpeg:500",
        ],
    )
    assert bad.exit_code == 1 and "jpeg" in bad.output and "Traceback" not in bad.output


def test_size_limits_apply_to_train_and_evaluate(tmp_path, tiny_model):
    real = write_noise_faces(tmp_path / "real", 6, smooth=False, seed=3)
    fake = write_noise_faces(tmp_path / "fake", 6, smooth=True, seed=4)
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
            "dlib",
            "--max-bytes",
            "100",
            "--output",
            str(tmp_path / "m.safetensors"),
        ],
    )
    assert result.exit_code == 1 and "need at least 5 faces" in result.output
    assert result.stderr.count("file too large") == 12
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--model",
            str(tiny_model),
            "--aligned",
            "--format",
            "json",
            "--max-pixels",
            str(96 * 96 - 1),
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["n_unreadable"] == 12 and m["n_real"] == 0 and m["n_fake"] == 0


def test_threads_option_sets_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["--threads", "1", "weights", "list"])
        assert result.exit_code == 0 and torch.get_num_threads() == 1
        result = CliRunner().invoke(main, ["--threads", "0", "weights", "list"])
        assert result.exit_code == 2 and "Traceback" not in result.output
    finally:
        torch.set_num_threads(before)


def test_device_option_refuses_what_is_not_here():
    import torch

    runner = CliRunner()
    result = runner.invoke(main, ["--device", "warp-drive", "weights", "list"])
    assert result.exit_code == 2 and "not a torch device" in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(main, ["--device", "cuda", "weights", "list"])
        assert result.exit_code == 2 and "no CUDA GPU" in result.output
    assert runner.invoke(main, ["--device", "cpu", "weights", "list"]).exit_code == 0


@pytest.mark.slow
def test_train_first_taps_and_detect_with_workers(tmp_path, weight_file):
    """--taps N trains on the first N layers only; --workers gives the rows --workers 0 gives."""
    from fakespotter.persistence import load_model

    weight_file("dlib")
    real = write_noise_faces(tmp_path / "real", 8, smooth=False, seed=5)
    fake = write_noise_faces(tmp_path / "fake", 8, smooth=True, seed=6)
    model = tmp_path / "m.safetensors"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "--workers",
            "1",
            "train",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--aligned",
            "--backbone",
            "dlib",
            "--taps",
            "5",
            "--output",
            str(model),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(load_model(model).taps_) == 5
    rows = {}
    for workers in ("0", "1"):
        result = runner.invoke(
            main,
            [
                "--workers",
                workers,
                "detect",
                str(tmp_path),
                "--aligned",
                "--model",
                str(model),
                "--format",
                "json",
            ],
        )
        assert result.exit_code == 0, result.output
        rows[workers] = json.loads(result.stdout)
    assert rows["0"] == rows["1"] and len(rows["0"]) == 16
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
            "dlib",
            "--taps",
            "999",
            "--output",
            str(model.with_name("too-many.safetensors")),
        ],
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "taps must be between 1 and" in result.output, result.output


@pytest.mark.slow
def test_train_augment_adds_perturbed_copies(tmp_path, weight_file):
    from fakespotter.persistence import load_model

    weight_file("dlib")
    real = write_noise_faces(tmp_path / "real", 8, smooth=False, seed=7)
    fake = write_noise_faces(tmp_path / "fake", 8, smooth=True, seed=8)
    models, rows = {}, {}
    for flag in ([], ["--augment"], ["--augment", "simple,pipeline"]):
        out = tmp_path / f"m{len(flag)}.safetensors"
        result = CliRunner().invoke(
            main,
            [
                "train",
                "--real",
                str(real),
                "--fake",
                str(fake),
                "--aligned",
                "--backbone",
                "dlib",
                "--variant",
                "layer",
                *flag,
                "--output",
                str(out),
                "--save-features",
                str(tmp_path / f"f{len(flag)}.npz"),
            ],
        )
        assert result.exit_code == 0, result.output
        models[len(flag)] = load_model(out)
        with np.load(tmp_path / f"f{len(flag)}.npz") as saved:
            rows[len(flag)] = np.bincount(saved["groups"])  # rows per photo
    assert [models[n].training_["augment"] for n in (0, 1, 2)] == [
        [],
        ["simple"],
        ["simple", "pipeline"],
    ]
    # one row per photo, plus one copy per recipe, each in its photo's group
    assert [set(rows[n]) for n in (0, 1, 2)] == [{1}, {2}, {3}] and len(rows[2]) == 16
    # same thresholds (from the photos themselves), a classifier that also saw the copies
    assert (models[1].thresholds_ == models[0].thresholds_).all()
    assert not (models[1].coef_ == models[0].coef_).all()
    assert not (models[2].coef_ == models[1].coef_).all()


def test_train_augment_names_an_unknown_recipe(tmp_path):
    real = write_noise_faces(tmp_path / "real", 2, smooth=False, seed=7)
    result = CliRunner().invoke(
        main,
        ["train", "--real", str(real), "--fake", str(real), "--augment", "simple,sepia",
         "--output", str(tmp_path / "m.safetensors")],
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown augmentation 'sepia'" in result.output and "pipeline" in result.output

"""Issue #27 (18): --real is repeatable with named sources, as --fake is (train, evaluate,
update); a repeated --real used to keep only the last folder, silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter.cli import main
from fakespotter.persistence import load_model
from fakespotter.trainingset import load_training_features


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_reals(tmp_path_factory, tiny_model):
    """A model trained on two named real sources (the tiny model's reals and more noise)."""
    root = tmp_path_factory.mktemp("two_reals")
    wild = write_noise_faces(root / "wild", 6, smooth=False, seed=51)
    model, features = root / "model.safetensors", root / "features.npz"
    result = _run(
        "train", "--real", f"ffhq={tiny_model.parent / 'real'}", "--real", wild,
        "--fake", tiny_model.parent / "fake", "--backbone", "dlib", "--variant", "layer",
        "--aligned", "--output", model, "--save-features", features,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return model, features, root


@pytest.mark.slow
def test_train_keeps_every_real_source_by_name(two_reals, tiny_model):
    model, features, root = two_reals
    t = load_model(model).training_
    assert t["n_real"] == 18 and t["real_sources"] == {
        "ffhq": {"folder": str(tiny_model.parent / "real"), "n_faces": 12},
        "wild": {"folder": str(root / "wild"), "n_faces": 6},  # a bare DIR: the folder's name
    }
    assert f"--real ffhq={tiny_model.parent / 'real'} --real wild={root / 'wild'}" in t["command"]
    rows = load_training_features(features, load_model(model))
    assert rows.counts() == {"real:ffhq": 12, "real:wild": 6, "fake": 12}
    assert set(rows.y[rows.source < 2]) == {0} and set(rows.y[rows.source == 2]) == {1}
    shown = _run("info", "--model", model).output
    assert "trained on   12 real faces, source 'ffhq'" in shown
    assert "6 real faces, source 'wild'" in shown and "12 fake faces, source 'fake'" in shown


@pytest.mark.slow
def test_evaluate_lists_each_real_source(two_reals, tiny_model):
    model, _, root = two_reals
    args = ["evaluate", "--real", f"ffhq={tiny_model.parent / 'real'}", "--real", root / "wild",
            "--fake", tiny_model.parent / "fake", "--model", model, "--aligned"]  # fmt: skip
    result = _run(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["n_real"] == 18 and m["n_fake"] == 12
    assert {name: s["class"] for name, s in m["per_source"].items()} == {
        "ffhq": "real",
        "wild": "real",
        "fake": "fake",
    }
    wild = m["per_source"]["wild"]  # against all the fakes
    assert wild["n_real"] == 6 and wild["n_fake"] == 12 and wild["folder"] == str(root / "wild")
    assert m["per_source"]["fake"]["n_real"] == 18
    table = _run(*args).stdout
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert lines["ffhq"][1:3] == ["real", "12"] and lines["wild"][1:3] == ["real", "6"]


@pytest.mark.slow
def test_update_adds_a_named_real_source(tmp_path, two_reals):
    model, features, _ = two_reals
    mine = write_noise_faces(tmp_path / "mine", 5, smooth=False, seed=52)
    out, out_features = tmp_path / "updated.safetensors", tmp_path / "updated.npz"
    result = _run(
        "update", "--model", model, "--features", features, "--real", f"mine={mine}",
        "--real", f"wild={mine}", "--aligned", "--output", out, "--save-features", out_features,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    t = load_model(out).training_
    assert t["real_sources"]["mine"] == {"folder": str(mine), "n_faces": 5}
    assert t["real_sources"]["wild"]["n_faces"] == 11  # a name it had: added to that source
    assert t["n_real"] == 28 and t["updates"][0]["added"] == {"real:mine": 5, "real:wild": 5}
    rows = load_training_features(out_features, load_model(out))
    assert rows.counts()["real:mine"] == 5 and rows.counts()["real:wild"] == 11
    assert not rows.y[np.array(rows.sources)[rows.source] == "real:mine"].any()
    assert "5 real faces, source 'mine'" in _run("info", "--model", out).output


def test_source_names_are_their_own(tmp_path, tiny_model):
    real, fake = tiny_model.parent / "real", tiny_model.parent / "fake"
    for args in (
        ["--real", f"x={real}", "--fake", f"x={fake}"],  # one name, two sources
        ["--real", str(real), "--real", str(real)],  # two bare folders of one name
        ["--real", str(real), "--fake", f"real={fake}"],  # a fake source named as real ones
    ):
        result = _run("train", *args, "--fake", f"f={fake}", "--output", tmp_path / "m")
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "name" in result.output
    result = _run("evaluate", "--real", f"a={real}", "--fake", f"a={fake}")
    assert result.exit_code == 2 and "two sources are named 'a'" in result.output


def test_one_source_name_never_holds_both_classes():
    from fakespotter.trainingset import TrainingFeatures, TrainingFeaturesError

    def rows(y):
        return TrainingFeatures(
            np.zeros((1, 2)), np.array([y]), np.array([0]), np.array([0]), ["x"]
        )

    assert rows(0).extended(rows(0)).counts() == {"x": 2}
    with pytest.raises(TrainingFeaturesError, match="'x' holds real photos in the stored"):
        rows(0).extended(rows(1))

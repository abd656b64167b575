"""Issue #27 (15): `update` without held-out photos keeps the model's operating point (it
used to fall back to 0.5 while `info` still said it was chosen on val), and `info` says where
each number came from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter.cli import main
from fakespotter.persistence import load_model


def _run(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def pointed(tmp_path_factory, tiny_model) -> tuple[Path, Path, Path]:
    """The tiny model trained with held-out photos (an operating point) and its features."""
    root = tmp_path_factory.mktemp("pointed_update")
    val_real = write_noise_faces(root / "val_real", 10, smooth=False, seed=11)
    val_fake = write_noise_faces(root / "val_fake", 10, smooth=True, seed=12)
    model, features = root / "model.safetensors", root / "features.npz"
    _run(
        "train", "--real", tiny_model.parent / "real", "--fake", tiny_model.parent / "fake",
        "--val-real", val_real, "--val-fake", val_fake, "--backbone", "dlib",
        "--variant", "layer", "--aligned", "--output", model, "--save-features", features,
    )  # fmt: skip
    det = load_model(model)
    # a point well away from 0.5, as the shipped model's
    det.set_operating_point(replace(det.operating_point_, threshold=0.744, uncertain_from=None))
    from fakespotter.persistence import save_model

    save_model(det, model, det.training_)
    return model, features, root


@pytest.mark.slow
def test_update_without_held_out_photos_keeps_the_operating_point(tmp_path, pointed):
    model, features, root = pointed
    new = write_noise_faces(tmp_path / "new", 6, smooth=True, seed=31)
    out = tmp_path / "updated.safetensors"
    result = CliRunner().invoke(
        main,
        ["update", "--model", str(model), "--features", str(features), "--fake",
         f"new={new}", "--aligned", "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    before, after = load_model(model), load_model(out)
    assert after.threshold_ == before.threshold_ == 0.744 and after.uncertain_ is None
    assert "kept the model's operating point (fake at P >= 0.744" in result.stderr
    assert after.operating_point_.chosen_on == before.operating_point_.chosen_on
    assert after.operating_point_.record["kept_by_updates"] == 1
    assert after.training_["updates"][0]["operating_point"] == "kept"
    shown = _run("info", "--model", out)
    val = f"{root / 'val_real'} + {root / 'val_fake'}"
    assert (
        # the band every output applies: no face at 0.5 or more is called real
        f"labels       fake at P(fake) >= 0.744, uncertain from 0.500 (chosen on {val} at "
        "train time; kept by "
        "update (no held-out photos given))" in shown
    )
    assert "by `fakespotter update`)" in shown.split("novelty")[1]  # refitted, and says so
    assert "operating point kept" in shown


@pytest.mark.slow
def test_update_with_held_out_photos_chooses_it_again_and_says_so(tmp_path, pointed):
    model, features, root = pointed
    new = write_noise_faces(tmp_path / "new", 6, smooth=True, seed=32)
    out = tmp_path / "updated.safetensors"
    _run(
        "update", "--model", model, "--features", features, "--fake", f"new={new}",
        "--val-real", root / "val_real", "--val-fake", root / "val_fake", "--aligned",
        "--output", out,
    )  # fmt: skip
    after = load_model(out)
    assert after.operating_point_.chosen_by == "update"
    assert "kept_by_updates" not in after.operating_point_.record
    shown = _run("info", "--model", out)
    assert f"(chosen on {root / 'val_real'} + {root / 'val_fake'} by `fakespotter update`)" in (
        shown
    )


def test_info_says_a_model_trained_without_held_out_photos_has_the_plain_cut_off(tiny_model):
    shown = _run("info", "--model", tiny_model)
    assert (
        "labels       fake at P(fake) >= 0.500 (the plain cut-off: no held-out photos given at "
        "train time)" in shown
    )
    assert "chosen on ?" not in shown

"""`train --save-features` and `fakespotter update`: the cheap update (refit the classifier on
stored features plus new faces, thresholds kept), and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import train_cli, write_noise_faces

from fakespotter.cli import main
from fakespotter.detector import FakeSpotter
from fakespotter.persistence import load_model
from fakespotter.training import largest_faces
from fakespotter.trainingset import (
    TrainingFeatures,
    TrainingFeaturesError,
    load_training_features,
    save_training_features,
)


def _stripes(folder, n, seed):
    """A 'generator' the noise-trained model never saw: noise with bright horizontal bands."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        x[::8] = 255
        Image.fromarray(x).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def stored(tmp_path_factory, tiny_model):
    """A tiny augmented model trained with --save-features."""
    root = tmp_path_factory.mktemp("stored")
    model, features = root / "model.safetensors", root / "train.npz"
    train_cli(
        "--real", tiny_model.parent / "real", "--fake", f"blur={tiny_model.parent / 'fake'}",
        "--augment", "--save-features", features, output=model,
    )  # fmt: skip
    return model, features


def test_the_stored_features_are_the_rows_the_model_was_fitted_on(stored, tiny_model):
    model, features = stored
    det = load_model(model)
    rows = load_training_features(features, det)
    assert len(rows) == 48 and rows.sources == ["real", "blur"]  # 24 photos + 24 copies
    assert rows.counts() == {"real": 24, "blur": 24}
    # every copy shares a photo's group and label
    assert set(rows.groups[24:]) <= set(rows.groups[:24])
    assert all(rows.y[g] == rows.y[24 + i] for i, g in enumerate(rows.groups[24:]))
    # the photos' rows are what the model counts for those photos
    real = sorted((tiny_model.parent / "real").iterdir())
    crops = largest_faces(det.face_cropper(True), real).crops
    assert np.array_equal(rows.features[:12], det.transform(crops))
    refit = FakeSpotter(backbone="dlib", variant="layer").fit_features(
        rows.features, rows.y, groups=rows.groups
    )
    assert np.allclose(refit.coef_, det.coef_) and refit.C_ == det.C_


def test_update_learns_a_new_source_from_its_faces(tmp_path, stored):
    model, features = stored
    new = _stripes(tmp_path / "stripes", 12, seed=5)
    held_out = _stripes(tmp_path / "stripes_test", 8, seed=6)
    out, out_features = tmp_path / "updated.safetensors", tmp_path / "updated.npz"
    result = CliRunner().invoke(
        main,
        [
            "update",
            "--model",
            str(model),
            "--features",
            str(features),
            "--fake",
            f"stripes={new}",
            "--aligned",
            "--output",
            str(out),
            "--save-features",
            str(out_features),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "refitted on 48 stored + 12 new faces" in result.stdout
    before, after = load_model(model), load_model(out)
    assert np.array_equal(after.thresholds_, before.thresholds_)  # thresholds kept
    crops = largest_faces(after.face_cropper(True), sorted(held_out.iterdir())).crops
    p_before = before.predict_proba(crops)[:, 1]
    p_after = after.predict_proba(crops)[:, 1]
    assert p_after.mean() > p_before.mean() and (p_after >= after.threshold_).mean() >= 0.75
    t = after.training_
    assert t["fake_sources"]["stripes"] == {"folder": str(new), "n_faces": 12}
    assert t["fake_sources"]["blur"]["n_faces"] == 12 and t["n_fake"] == 24
    assert t["updates"][0]["added"] == {"stripes": 12}
    assert after.novelty_threshold_ > 0
    # the new features file carries on: the next update starts from all 60 rows
    assert len(load_training_features(out_features, after)) == 60
    shown = CliRunner().invoke(main, ["info", "--model", str(out)])
    assert "updated      added 12 stripes faces" in shown.output
    assert "12 fake faces, source 'stripes'" in shown.output

    # the command is training.update: in Python, the same faces give the same model
    from fakespotter.training import update

    det = load_model(model)
    det, record = update(
        det, fake={"stripes": new}, stored=load_training_features(features, det), aligned=True
    )
    assert record.n_stored == 48 and record.n_new == 12 and record.operating_point_how == "kept"
    np.testing.assert_allclose(det.predict_proba(crops)[:, 1], p_after, rtol=1e-6)
    assert det.threshold_ == after.threshold_
    assert record.info["fake_sources"] == t["fake_sources"]
    assert record.info["updates"][0]["added"] == {"stripes": 12}


def test_update_refuses_another_models_features_and_files_that_are_not_features(tmp_path, stored):
    model, features = stored
    new = _stripes(tmp_path / "stripes", 6, seed=7)
    out = tmp_path / "updated.safetensors"

    def update(model_file, features_file, *extra):
        return CliRunner().invoke(
            main,
            [
                "update",
                "--model",
                str(model_file),
                "--features",
                str(features_file),
                *extra,
                "--aligned",
                "--output",
                str(out),
            ],
        )

    other = tmp_path / "other.safetensors"  # trained on other photos: other thresholds
    train_cli(
        "--real", write_noise_faces(tmp_path / "r", 6, smooth=False, seed=41),
        "--fake", write_noise_faces(tmp_path / "f", 6, smooth=True, seed=42), output=other,
    )  # fmt: skip
    result = update(other, features, "--fake", str(new))
    assert result.exit_code == 1 and "another model" in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    result = update(model, junk, "--fake", str(new))
    assert result.exit_code == 1 and "not a fakespotter training-features file" in result.output
    result = update(model, features)  # nothing new
    assert result.exit_code == 2 and "--fake NAME=DIR and/or --real NAME=DIR" in result.output


def test_a_features_file_is_data_and_checks_what_it_holds(tmp_path, stored):
    model, _ = stored
    det = load_model(model)
    rows = TrainingFeatures(
        np.full((2, det.n_features_in_), 3, np.float32),
        np.array([0, 1]),
        np.array([0, 1]),
        np.array([0, 1]),
        ["real", "x"],
    )
    path = tmp_path / "f.npz"
    save_training_features(path, det, rows)
    back = load_training_features(path, det)
    assert np.array_equal(back.features, rows.features) and back.sources == ["real", "x"]
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert json.loads(str(data["meta"]))["format"].startswith("fakespotter-training-features")
        assert data["features"].dtype == np.uint16  # whole counts: stored small
    with pytest.raises(TrainingFeaturesError, match="different lengths"):
        TrainingFeatures(rows.features, np.array([0]), rows.groups, rows.source, rows.sources)
    more = rows.extended(
        TrainingFeatures(rows.features[:1], np.array([1]), np.array([0]), np.array([0]), ["y"])
    )
    assert more.sources == ["real", "x", "y"] and list(more.source) == [0, 1, 2]
    assert list(more.groups) == [0, 1, 2]  # a new photo gets a group of its own


@pytest.mark.slow
def test_update_without_features_uses_the_kit_beside_the_model(stored, tmp_path):
    """Issue #28: `update --fake NAME=DIR` with no --features file refits on the update kit
    beside the model (the shipped model's ships with it) and the result scores photos; a
    model without a kit is refused in one line, and --save-features needs --features."""
    import shutil

    from fakespotter.updatekit import KIT_SUFFIX, build_kit, save_kit

    model, features = stored
    home = tmp_path / "home"
    home.mkdir()
    bare = home / "m.safetensors"
    shutil.copy(model, bare)
    new = _stripes(tmp_path / "stripes", 8, seed=5)
    args = ["update", "--model", str(bare), "--fake", f"stripes={new}", "--aligned"]
    refused = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "x.safetensors")])
    assert refused.exit_code == 1 and "no update kit beside this model" in refused.output
    assert len(refused.output.strip().splitlines()) == 1

    det = load_model(bare)
    kit = build_kit(det, load_training_features(features, det), per_class=10)
    save_kit(home / f"m{KIT_SUFFIX}", kit)
    out = tmp_path / "m2.safetensors"
    result = CliRunner().invoke(main, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "(update kit) + 8 new faces" in result.output
    updated = load_model(out)
    assert updated.training_["fake_sources"]["stripes"]["n_faces"] == 8
    assert updated.training_["updates"][-1]["stored"] == "update kit"
    assert updated.n_features_in_ == det.n_features_in_
    # the new generator is learnt: its photos now score higher than under the old model
    crops = largest_faces(det.face_cropper(True), sorted(new.iterdir())).crops
    assert updated.predict_proba(crops)[:, 1].mean() > det.predict_proba(crops)[:, 1].mean()
    detected = CliRunner().invoke(
        main, ["detect", str(new), "--model", str(out), "--aligned", "--format", "json"]
    )
    assert detected.exit_code in (0, 4), detected.output
    rows = json.loads(detected.stdout)
    assert len(rows) == 8 and all(r["p_fake"] is not None for r in rows)
    needs = CliRunner().invoke(
        main, [*args, "--output", str(tmp_path / "y.safetensors"), "--save-features",
               str(tmp_path / "f.npz")],
    )  # fmt: skip
    assert needs.exit_code == 2 and "--save-features needs --features" in needs.output


def test_the_recorded_command_gives_augment_as_typed(stored):
    """The model file's command can be run again: `--augment simple`, not a Python tuple."""
    model, _ = stored
    command = load_model(model).training_["command"]
    assert " --augment simple " in f"{command} " and "('" not in command


@pytest.mark.slow
@pytest.mark.parametrize("held_out", [False, True])
def test_update_from_a_kit_of_some_columns_keeps_the_novelty_signal(
    stored, tiny_model, tmp_path, held_out
):
    """The shipped kit keeps 9% of the columns: `update` records its rows on those columns
    and keeps the model's novelty signal (fitted on all of them), with or without
    --val-real/--val-fake choosing the operating point (it refused such a kit before)."""
    import shutil

    from fakespotter.updatekit import KIT_SUFFIX, build_kit, save_kit

    model, features = stored
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(model, home / "m.safetensors")
    det = load_model(model)
    some = np.arange(0, det.n_features_in_, 2)
    kit = build_kit(det, load_training_features(features, det), per_class=10, columns=some)
    save_kit(home / f"m{KIT_SUFFIX}", kit)
    new = _stripes(tmp_path / "stripes", 8, seed=6)
    out = tmp_path / "m2.safetensors"
    args = ["update", "--model", str(home / "m.safetensors"), "--aligned"]
    args += ["--fake", f"stripes={new}", "--output", str(out)]
    if held_out:
        args += ["--val-real", str(tiny_model.parent / "real"), "--val-fake", str(new)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    updated = load_model(out)
    assert updated.n_features_in_ == det.n_features_in_
    assert updated.novelty_threshold_ == det.novelty_threshold_
    assert updated.training_["updates"][-1]["rows"]["stripes"] == 8


@pytest.mark.slow
def test_an_updated_model_gets_a_kit_that_keeps_what_the_update_taught(stored, tmp_path):
    """`update` from a kit writes the updated model's own kit beside it (the kit's rows plus
    the new ones, weighted as fitted), so a second update keeps the first one's faces; a
    file there that is not a kit is never replaced."""
    import shutil

    from fakespotter.modelfile import model_id
    from fakespotter.updatekit import KIT_SUFFIX, build_kit, load_kit, save_kit

    model, features = stored
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(model, home / "m.safetensors")
    det = load_model(model)
    kit = build_kit(det, load_training_features(features, det), per_class=10)
    kit.info["measured"] = {"k": 100}  # what the shipped kit carries: not the updated one's
    save_kit(home / f"m{KIT_SUFFIX}", kit)

    def update(src, name, seed, out):
        new = _stripes(tmp_path / name, 6, seed=seed)
        args = ["update", "--model", str(src), "--aligned", "--fake", f"{name}={new}"]
        result = CliRunner().invoke(main, [*args, "--output", str(out)])
        assert result.exit_code == 0, result.output
        return result

    m2, m3 = tmp_path / "m2.safetensors", tmp_path / "m3.safetensors"
    said = update(home / "m.safetensors", "stripes", 11, m2)
    assert f"wrote {tmp_path / f'm2{KIT_SUFFIX}'}" in said.stderr
    kit2 = load_kit(tmp_path / f"m2{KIT_SUFFIX}", load_model(m2))  # belongs to m2
    assert len(kit2) == len(kit) + 6 and kit2.info["model_id"] == model_id(m2)
    assert "measured" not in kit2.info and kit2.info["updates"] == 1
    update(m2, "dots", 12, m3)
    kit3 = load_kit(tmp_path / f"m3{KIT_SUFFIX}", load_model(m3))
    rows = kit3.rows().counts()
    assert rows["stripes"] == 6 and rows["dots"] == 6  # the first update's faces are kept
    assert set(load_model(m3).training_["fake_sources"]) >= {"stripes", "dots"}

    stranger = tmp_path / f"m4{KIT_SUFFIX}"
    stranger.write_text("my notes")
    new = tmp_path / "stripes"
    args = ["update", "--model", str(m3), "--aligned", "--fake", f"more={new}", "--overwrite"]
    refused = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "m4.safetensors")])
    assert refused.exit_code == 1 and "not a fakespotter output" in refused.output
    assert stranger.read_text() == "my notes" and not (tmp_path / "m4.safetensors").exists()

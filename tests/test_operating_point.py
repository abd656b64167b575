"""The operating point (threshold and uncertain band chosen on held-out photos), --threshold,
and the novelty signal ("unlike the faces the model was trained on")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import train_cli, write_noise_faces

from fakespotter.cli import main
from fakespotter.operating_point import OperatingPoint, choose_operating_point
from fakespotter.persistence import load_model, save_model

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"


def test_the_threshold_keeps_false_alarms_under_the_target_and_the_band_misses_few_fakes():
    rng = np.random.default_rng(0)
    p = np.r_[rng.beta(2, 5, 400), rng.beta(5, 2, 600)]  # overlapping classes
    y = np.r_[np.zeros(400), np.ones(600)]
    point = choose_operating_point(p, y, max_false_alarm=0.01, max_missed=0.05)
    t, (low, high) = point["threshold"], point["uncertain"]
    assert high == t and low < t
    assert np.mean(p[y == 0] >= t) <= 0.01 < np.mean(p[y == 0] >= np.nextafter(t, -1) - 1e-3)
    assert np.mean(p[y == 1] < low) <= 0.05
    assert point["real_fake"] == pytest.approx(np.mean(p[y == 0] >= t))
    assert point["fake_uncertain"] == pytest.approx(np.mean((p[y == 1] >= low) & (p[y == 1] < t)))
    # well separated classes need no band
    clean = choose_operating_point(
        np.r_[np.full(100, 0.1), np.full(100, 0.9)],
        y[:200] * 0 + np.r_[np.zeros(100), np.ones(100)],
    )
    assert clean["uncertain"] is None and clean["real_fake"] == 0 and clean["fake_fake"] == 1


@pytest.fixture(scope="module")
def pointed_model(tmp_path_factory, tiny_model) -> Path:
    """The tiny model retrained with held-out photos: it stores an operating point."""
    root = tmp_path_factory.mktemp("pointed")
    write_noise_faces(root / "val_real", 10, smooth=False, seed=11)
    write_noise_faces(root / "val_fake", 10, smooth=True, seed=12)
    out = root / "model.safetensors"
    result = train_cli(
        "--real", tiny_model.parent / "real", "--fake", tiny_model.parent / "fake",
        "--val-real", root / "val_real", "--val-fake", root / "val_fake", output=out,
    )  # fmt: skip
    assert "operating point on the held-out photos" in result.stderr
    return out


def test_train_stores_the_operating_point_and_novelty_chosen_on_held_out_photos(pointed_model):
    det = load_model(pointed_model)
    point = det.operating_point_
    assert point.chosen_on.endswith("val_real + " + str(pointed_model.parent / "val_fake"))
    assert det.threshold_ == point.threshold and point.record["real_fake"] <= 0.01 + 1e-9
    assert det.novelty_threshold_ > 0 and det.novelty_.components_.shape[1] == len(det.coef_)
    assert "val_real" in det.novelty_.info_["chosen_on"]


def test_threshold_option_replaces_the_models_operating_point(pointed_model, tmp_path):
    folder = write_noise_faces(tmp_path / "faces", 3, smooth=True, seed=21)

    def labels(*extra):
        result = CliRunner().invoke(
            main,
            [
                "detect",
                str(folder),
                "--model",
                str(pointed_model),
                "--aligned",
                "--format",
                "json",
                *extra,
            ],
        )
        return [(r["label"], r["p_fake"]) for r in json.loads(result.stdout)]

    assert [label for label, _ in labels("--threshold", "0")] == ["fake"] * 3
    # no P(fake) reaches 1.0 exactly; those from 0.5 up are uncertain, never real
    never = labels("--threshold", "1")
    assert [label for label, _ in never] == ["uncertain" if p >= 0.5 else "real" for _, p in never]
    bad = CliRunner().invoke(main, ["detect", str(folder), "--threshold", "1.5"])
    assert bad.exit_code == 2


def test_detect_says_uncertain_inside_the_band(pointed_model, tmp_path):
    det = load_model(pointed_model)
    det.set_operating_point(OperatingPoint(1.0, 0.0))  # every score inside the band
    wide = tmp_path / "wide.safetensors"
    save_model(det, wide, det.training_)
    assert load_model(wide).uncertain_ == (0.0, 1.0)
    folder = write_noise_faces(tmp_path / "faces", 2, smooth=True, seed=22)
    result = CliRunner().invoke(main, ["detect", str(folder), "--model", str(wide), "--aligned"])
    assert result.exit_code == 0
    table = result.stdout.splitlines()[1:]
    assert [line.split()[1].rstrip("!") for line in table] == ["uncertain"] * 2
    assert "2 uncertain" in result.stderr
    rows = json.loads(
        CliRunner()
        .invoke(
            main, ["detect", str(folder), "--model", str(wide), "--aligned", "--format", "json"]
        )
        .stdout
    )
    assert [r["label"] for r in rows] == ["uncertain", "uncertain"]


def test_a_face_far_from_the_training_faces_is_flagged_a_training_like_one_is_not(
    pointed_model, tiny_model
):
    like = sorted((tiny_model.parent / "real").iterdir())[:3]  # the faces it was trained on
    rows = json.loads(
        CliRunner()
        .invoke(
            main,
            [
                "detect",
                *map(str, like),
                str(ASTRONAUT),
                "--model",
                str(pointed_model),
                "--aligned",
                "--format",
                "json",
            ],
        )
        .stdout
    )
    for row in rows[:3]:  # (noise "faces": the face check flags them, the novelty does not)
        assert row["novelty"] is not None and "unlike the faces" not in row["warning"], row
    assert "unlike the faces the model was trained on" in rows[3]["warning"]
    assert rows[3]["novelty"] > max(r["novelty"] for r in rows[:3])


def test_models_written_before_operating_points_load_with_the_plain_cut_off(
    pointed_model, tmp_path
):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from fakespotter import modelfile

    with safe_open(str(pointed_model), "np") as f:
        meta = json.loads(f.metadata()["fakespotter"])
    arrays = {k: v for k, v in load_file(str(pointed_model)).items() if not k.startswith("novelty")}
    old = {
        k: v for k, v in meta.items() if k not in ("operating_point", "novelty", "format_version")
    }
    path = tmp_path / "old.safetensors"
    modelfile.save(path, old, arrays)  # as fakespotter wrote them before these keys
    det = load_model(path)
    assert det.threshold_ == 0.5 and det.uncertain_ is None
    assert det.novelty(np.zeros((1, len(det.coef_)))) is None
    assert det.labels([0.49, 0.5]) == ["real", "fake"]


def test_the_novelty_limit_is_a_percentile_of_the_held_out_real_faces_alone(pointed_model):
    # reals spread wider than the training generators' fakes: a limit from both classes
    # flagged more than the stated share of real photos like the training ones
    from fakespotter.training import NOVELTY_PERCENTILE, largest_faces

    det = load_model(pointed_model)
    real = sorted((pointed_model.parent / "val_real").iterdir())
    crops = largest_faces(det.face_cropper(True), real).crops
    expected = np.percentile(det.novelty(det.transform(crops)), NOVELTY_PERCENTILE)
    assert det.novelty_threshold_ == pytest.approx(expected)
    assert det.novelty_.info_["chosen_on"] == str(pointed_model.parent / "val_real")


def test_without_held_out_photos_the_novelty_limit_comes_from_held_out_training_reals():
    from fakespotter.detector import FakeSpotter
    from fakespotter.training import NOVELTY_PERCENTILE, held_out_novelty_threshold

    rng = np.random.default_rng(0)
    # real faces spread wide, the generator's fakes tight: a limit from both classes would
    # sit lower and flag more reals than the stated 1%
    F = np.r_[rng.normal(size=(300, 6)) * 3, rng.normal(size=(300, 6)) * 0.3]
    y = np.r_[np.zeros(300, int), np.ones(300, int)]
    det = FakeSpotter(backbone="dlib", variant="layer", Cs=(1.0,)).fit_features(F, y)
    limit = held_out_novelty_threshold(det, F, y, seed=0)
    order = np.random.default_rng(0).permutation(len(F))
    fit, rest = order[:480], order[480:]
    det.fit_novelty(F[fit])
    held = det.novelty(F[rest])
    assert limit == pytest.approx(np.percentile(held[y[rest] == 0], NOVELTY_PERCENTILE))
    assert limit > np.percentile(held, NOVELTY_PERCENTILE)


def test_a_face_at_or_above_one_half_is_never_labelled_real():
    # issue #27 (14): the shipped model (fake from 0.744, band from 0.559) called an SG1 fake
    # at P(fake) 0.533 "real": "Leaning real - 53% probability of being GAN-made"
    from fakespotter.detector import FakeSpotter
    from fakespotter.rows import label_for, uncertain_band

    assert label_for(0.533, 0.744, 0.559) == "uncertain"
    assert [label_for(p, 0.744, 0.559) for p in (0.499, 0.5, 0.6, 0.744)] == [
        "real", "uncertain", "uncertain", "fake",
    ]  # fmt: skip
    assert uncertain_band(0.744, 0.559) == (0.5, 0.744)
    # a cut-off of the user's own above 0.5 (--threshold, no band): the same words
    assert [label_for(p, 0.9) for p in (0.49, 0.6, 0.9)] == ["real", "uncertain", "fake"]
    assert uncertain_band(0.9, None) == (0.5, 0.9)
    # the plain cut-off and bands below 0.5 are unchanged
    assert [label_for(p) for p in (0.49, 0.5)] == ["real", "fake"]
    assert uncertain_band(0.5, None) is None
    assert [label_for(p, 0.4, 0.2) for p in (0.1, 0.3, 0.45)] == ["real", "uncertain", "fake"]
    assert uncertain_band(0.4, 0.2) == (0.2, 0.4)
    # every output labels through this rule: the detector's labels and the chosen point's rates
    det = FakeSpotter()
    det.set_operating_point(OperatingPoint(0.744, 0.559))
    assert det.labels(np.array([0.533, 0.2, 0.8])) == ["uncertain", "real", "fake"]
    real, fake = np.r_[np.full(9, 0.1), 0.8], np.r_[0.533, 0.6, np.full(8, 0.95)]
    p, y = np.r_[real, fake], np.r_[np.zeros(10), np.ones(10)]
    point = choose_operating_point(p, y, max_false_alarm=0.0, max_missed=0.1)
    assert point["uncertain"][0] == 0.6 and point["threshold"] > 0.8
    assert point["fake_real"] == 0.0 and point["fake_uncertain"] == pytest.approx(0.2)

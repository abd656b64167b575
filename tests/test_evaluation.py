"""Evaluation report, group breakdowns and photo perturbations (no weights, no data needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fakespotter.classifier import CalibratedLinearSVM
from fakespotter.coverage import counts_per_layer
from fakespotter.evaluation import (
    Perturbation,
    classifier_weight_per_layer,
    group_metrics,
    groups_from_manifest,
    groups_from_prefix,
    image_rng,
    parse_perturbations,
    write_report,
)
from fakespotter.metrics import evaluate_scores

pytest.importorskip("matplotlib")


def _scores(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    p_fake = np.where(labels == 1, rng.beta(5, 2, n), rng.beta(2, 5, n))
    return labels, p_fake


# -- report ------------------------------------------------------------------------------------


def test_report_writes_valid_files(tmp_path):
    labels, p_fake = _scores()
    groups = np.where(labels == 1, "StyleGAN1", "real:FFHQ").astype(object)
    groups[::7] = "mixed|source"  # a pipe must not break the Markdown table
    n_layers = 6
    rng = np.random.default_rng(1)
    counts = rng.poisson(100, (len(labels), n_layers)) + 20 * labels[:, None]
    perturbed = {"jpeg:75": np.clip(p_fake + rng.normal(0, 0.1, len(p_fake)), 0, 1)}

    result = write_report(
        tmp_path,
        labels=labels,
        p_fake=p_fake,
        groups=list(groups),
        layer_counts=counts,
        layer_names=[f"conv{i}" for i in range(n_layers)],
        layer_weights=rng.standard_normal(n_layers),
        perturbations=perturbed,
        meta={"model": "test.safetensors"},
    )

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == result
    expected = evaluate_scores(labels, p_fake)
    assert saved["overall"] == pytest.approx(expected)
    lo, hi = saved["overall_ci95"]["real_accuracy"]
    assert lo < expected["real_accuracy"] < hi
    assert saved["perturbations"][0]["perturbation"] == "none"
    assert saved["perturbations"][1]["auc"] == pytest.approx(
        evaluate_scores(labels, perturbed["jpeg:75"])["auc"]
    )
    assert saved["layers"]["fake_mean"] == pytest.approx(counts[labels == 1].mean(0).tolist())
    assert saved["meta"] == {"model": "test.safetensors"}

    for name in ("roc.png", "scores.png", "layers.png", "perturbations.png"):
        assert name in saved["files"]
        assert (tmp_path / name).stat().st_size > 10_000
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and min(im.size) >= 300
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for group in set(groups):
        assert group.replace("|", "\\|") in markdown
    assert "real:FFHQ" in page and "mixed|source" in page
    assert page.count("data:image/png;base64,") == 4
    assert "<script" not in page


def test_group_breakdown_counts_by_hand():
    # a: 3 fakes, 2 caught; b: 4 reals, 3 passed; c: 1 real passed + 1 fake missed
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1])
    p_fake = np.array([0.9, 0.6, 0.2, 0.1, 0.4, 0.3, 0.7, 0.2, 0.4])
    groups = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]
    table = group_metrics(labels, p_fake, groups)
    assert list(table) == ["a", "b", "c"]
    assert table["a"]["kind"] == "fake" and table["a"]["n"] == 3
    assert table["a"]["fake_accuracy"] == pytest.approx(2 / 3)
    assert "real_accuracy" not in table["a"]
    assert table["b"]["kind"] == "real" and table["b"]["n"] == 4
    assert table["b"]["real_accuracy"] == pytest.approx(3 / 4)
    assert "fake_accuracy" not in table["b"]
    c = table["c"]
    assert c["kind"] == "mixed" and c["n"] == 2 and (c["n_real"], c["n_fake"]) == (1, 1)
    assert (c["real_accuracy"], c["fake_accuracy"], c["accuracy"]) == (1.0, 0.0, 0.5)
    assert c["auc"] == 1.0  # ranked right, just below the threshold
    assert table["b"]["mean_p_fake"] == pytest.approx(0.375)


def test_report_with_real_faces_only(tmp_path):
    result = write_report(tmp_path, labels=[0, 0, 0], p_fake=[0.1, 0.7, 0.2])
    assert result["overall"]["real_accuracy"] == pytest.approx(2 / 3)
    assert result["overall"]["auc"] is None
    assert not (tmp_path / "roc.png").exists()  # no ROC without both classes
    assert (tmp_path / "scores.png").exists()
    assert "real faces" in (tmp_path / "report.md").read_text()


def test_perturbation_with_its_own_labels(tmp_path):
    labels, p_fake = _scores(40)
    kept = np.arange(40) != 5  # one photo lost its face after the perturbation
    result = write_report(
        tmp_path,
        labels=labels,
        p_fake=p_fake,
        perturbations={"blur:2": {"p_fake": p_fake[kept], "labels": labels[kept], "n_no_face": 1}},
    )
    row = result["perturbations"][1]
    assert row["n_real"] + row["n_fake"] == 39 and row["n_no_face"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": [0, 1], "p_fake": [0.5]}, "equal-length"),
        ({"labels": [], "p_fake": []}, "no scored samples"),
        ({"labels": [0, 2], "p_fake": [0.1, 0.2]}, "0 \\(real\\) or 1"),
        ({"labels": [0, 1], "p_fake": [0.1, 0.9], "groups": ["a"]}, "group names"),
        ({"labels": [0, 1], "p_fake": [0.1, 0.9], "layer_counts": np.ones((3, 2))}, "N x L"),
        (
            {
                "labels": [0, 1],
                "p_fake": [0.1, 0.9],
                "layer_counts": np.ones((2, 2)),
                "layer_weights": [1.0],
            },
            "layer weights",
        ),
    ],
)
def test_report_rejects_bad_input(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_report(tmp_path, **kwargs)


# -- layers ------------------------------------------------------------------------------------


def test_counts_per_layer_sums_channels():
    features = np.arange(12, dtype=np.float32).reshape(2, 6)
    slices = {"conv1": slice(0, 2), "conv2": slice(2, 5), "fc": slice(5, 6)}
    counts = counts_per_layer(features, slices)
    assert counts.tolist() == [[1, 9, 5], [13, 27, 11]]


def test_layer_weights_of_a_layer_model():
    det = SimpleNamespace(variant="layer", coef_=np.array([0.5, -1.0]))
    weights, label = classifier_weight_per_layer(det)
    assert weights.tolist() == [0.5, -1.0] and "SVM" in label


# -- groups ------------------------------------------------------------------------------------


def test_groups_from_manifest(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "file,label,split,source,generator\n"
        "test/fake/sg1-a.jpg,fake,test,zoya,StyleGAN1\n"
        "test/real/ffhq-b.jpg,real,test,zoya,real:FFHQ\n"
        "train/real/ffhq-b.jpg,real,train,roeishc,real:FFHQ-1024\n"
        "wild/real/utk-c.jpg,real,wild,utk,\n"
    )
    paths = [
        "/data/faces/test/fake/sg1-a.jpg",
        "/data/faces/train/real/ffhq-b.jpg",
        "elsewhere/utk-c.jpg",
        "/x/unlisted.jpg",
    ]
    assert groups_from_manifest(paths, manifest) == [
        "StyleGAN1",
        "real:FFHQ-1024",
        "utk",
        "unknown",
    ]
    assert groups_from_manifest(paths[:1], manifest, column="source") == ["zoya"]
    with pytest.raises(ValueError, match="several groups"):
        groups_from_manifest(["copied/ffhq-b.jpg"], manifest)
    with pytest.raises(ValueError, match="columns"):
        groups_from_manifest(paths, manifest, column="origin")


def test_groups_from_prefix():
    paths = ["/d/sg1-zoya_00BY.jpg", "tpdne-x-y.png", "plain.jpg", "-odd.jpg"]
    assert groups_from_prefix(paths) == ["sg1", "tpdne", "unknown", "unknown"]


# -- perturbations -----------------------------------------------------------------------------


def test_parse_good_specs():
    found = parse_perturbations("jpeg:90, JPEG:75,blur:1,noise:5,resize:0.5")
    assert [p.name for p in found] == ["jpeg:90", "jpeg:75", "blur:1", "noise:5", "resize:0.5"]
    assert found[0] == Perturbation("jpeg", 90.0)
    assert parse_perturbations("") == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sharpen:2", "unknown perturbation 'sharpen'"),
        ("jpeg", "needs a value"),
        ("jpeg:", "needs a value"),
        ("jpeg:abc", "not a number"),
        ("jpeg:0", "quality must be an integer 1-100"),
        ("jpeg:101", "quality"),
        ("jpeg:50.5", "quality"),
        ("blur:0", "sigma must be > 0"),
        ("noise:-1", "sigma must be > 0"),
        ("noise:nan", "finite"),
        ("resize:1.5", "between 0 and 1"),
        ("resize:0", "between 0 and 1"),
        ("jpeg:90,,blur:1", "empty item"),
        ("blur:1,blur:1.0", "listed twice"),
    ],
)
def test_parse_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_perturbations(spec)
    assert "\n" not in str(info.value)


def _photo(size: int = 96) -> np.ndarray:
    """Smooth gradients plus fine texture: something for every perturbation to change."""
    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(3)
    base = np.stack([x, y, (x + y) / 2], axis=-1) * 160 + 40
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _high_freq_energy(image: np.ndarray) -> float:
    g = image.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def test_jpeg_q10_changes_more_than_q95():
    photo = _photo()
    low, high = Perturbation("jpeg", 10)(photo), Perturbation("jpeg", 95)(photo)
    assert low.shape == photo.shape and low.dtype == np.uint8
    err_low = np.abs(low.astype(int) - photo).mean()
    err_high = np.abs(high.astype(int) - photo).mean()
    assert err_low > 5 and err_low > err_high > 0
    assert not np.array_equal(low, photo)


def test_blur_and_resize_remove_detail_but_keep_shape():
    photo = _photo()
    energy = _high_freq_energy(photo)
    blurred = Perturbation("blur", 1.5)(photo)
    resized = Perturbation("resize", 0.5)(photo)
    for out in (blurred, resized):
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert _high_freq_energy(out) < 0.7 * energy
        # the picture itself stays: mean colour barely moves
        assert np.abs(out.mean(axis=(0, 1)) - photo.mean(axis=(0, 1))).max() < 2
    assert _high_freq_energy(Perturbation("blur", 3)(photo)) < _high_freq_energy(blurred)


def test_noise_has_the_requested_sigma():
    gray = np.full((128, 128, 3), 128, np.uint8)  # mid-gray: no clipping
    noisy = Perturbation("noise", 5)(gray, np.random.default_rng(0))
    diff = noisy.astype(float) - gray
    assert abs(diff.std() - 5) < 0.25 and abs(diff.mean()) < 0.2
    # values stay valid at the edges of the range
    white = Perturbation("noise", 50)(np.full((8, 8, 3), 255, np.uint8), np.random.default_rng(0))
    assert white.dtype == np.uint8 and white.max() == 255 and white.min() < 255


def test_perturbations_are_deterministic():
    photo = _photo(48)
    for p in parse_perturbations("jpeg:50,blur:1,noise:5,resize:0.5"):
        first = p(photo, image_rng(7, 3))
        assert np.array_equal(first, p(photo, image_rng(7, 3))), p.name
    noise = Perturbation("noise", 5)
    assert not np.array_equal(noise(photo, image_rng(7, 3)), noise(photo, image_rng(7, 4)))
    assert np.array_equal(noise(photo), noise(photo))  # no rng: a fixed seed, not global state


def test_perturbation_rejects_non_images():
    with pytest.raises(ValueError, match="uint8"):
        Perturbation("blur", 1)(np.zeros((8, 8, 3), np.float32))


def test_channel_counts_sum_to_layer_counts():
    """Same thresholds per layer, so a channel model's summed counts are the layer counts."""
    from fakespotter.backbones import get_backbone
    from fakespotter.detector import FakeSpotter

    backbone = get_backbone("dlib").untrained()
    size = backbone.input_size
    X = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    per_layer = {}
    for variant in ("layer", "channel"):
        det = FakeSpotter(backbone=backbone, variant=variant, progress=False).fit_thresholds(X)
        features = det.transform(X)
        per_layer[variant] = det.layer_counts(features)
        n = features.shape[1]
        ones = CalibratedLinearSVM.fitted(
            coef=np.ones(n), intercept=0.0, scaler_mean=np.zeros(n), scaler_scale=np.ones(n),
            calibration=(1.0, 0.0), C=1.0, cv_auc=0.5,
        )  # fmt: skip
        weights, _ = classifier_weight_per_layer(FakeSpotter.from_parts(det.features_, ones))
        assert len(weights) == len(det.taps_)
    assert per_layer["channel"].shape == (4, len(det.taps_))
    np.testing.assert_array_equal(per_layer["channel"], per_layer["layer"])


def test_pipeline_augmentation_is_deterministic_and_alters_the_photo_like_a_pipeline():
    from fakespotter.evaluation.perturb import AUGMENTATIONS, PipelineAugmentation

    assert AUGMENTATIONS["pipeline"] is PipelineAugmentation
    yy, xx = np.mgrid[0:96, 0:128]
    image = np.stack([xx * 2, yy * 2, (xx + yy) % 256], axis=2).astype(np.uint8)
    copies = [PipelineAugmentation(3, i)(image) for i in range(40)]
    for i, copy in enumerate(copies):
        assert copy.dtype == np.uint8 and copy.ndim == 3 and copy.shape[2] == 3
        # crop jitter takes at most 8% of each side; resampling returns that size or smaller
        assert 0.35 * 0.84 * 96 - 1 <= copy.shape[0] <= 96
        assert np.array_equal(copy, PipelineAugmentation(3, i)(image))  # same draw
    assert sum(c.shape != image.shape for c in copies) >= 10  # cropped or rescaled
    same_size = [c for c in copies if c.shape == image.shape]
    assert all(not np.array_equal(c, image) for c in same_size)  # every copy altered
    assert not np.array_equal(PipelineAugmentation(4, 0)(image), copies[0])


def test_random_augmentation_is_deterministic_per_image_and_covers_every_kind():
    from fakespotter.evaluation.perturb import RandomAugmentation, random_perturbation

    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    kinds = {getattr(random_perturbation(1, i)[0], "kind", "none") for i in range(200)}
    assert kinds == {"none", "jpeg", "blur", "noise", "resize"}
    for i in range(20):
        a, b = RandomAugmentation(1, i)(image), RandomAugmentation(1, i)(image)
        assert a.shape == image.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    p, _ = random_perturbation(1, 3)
    assert random_perturbation(2, 3)[0] != p or random_perturbation(1, 4)[0] != p

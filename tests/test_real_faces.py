"""Train and evaluate on a small slice of real FFHQ / StyleGAN faces (developer machines only)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from fakespotter.cli import main


def _slice(faces_dir, split: str, label: str, n: int, dest):
    dest.mkdir(parents=True)
    # every k-th file, so that each source and generator of the split is represented
    files = sorted((faces_dir / split / label).glob("*.jpg"))
    for f in files[:: max(1, len(files) // n)][:n]:
        shutil.copy(f, dest / f.name)
    return dest


@pytest.mark.slow
def test_train_and_evaluate_on_real_faces(faces_dir, weight_file, tmp_path):
    weight_file("facenet")
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    real = _slice(faces_dir, "train", "real", 60, tmp_path / "train_real")
    fake = _slice(faces_dir, "train", "fake", 60, tmp_path / "train_fake")
    model = tmp_path / "m.safetensors"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "train",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--backbone",
            "facenet",
            "--variant",
            "channel",
            "--output",
            str(model),
        ],
    )
    assert result.exit_code == 0, result.output
    test_real = _slice(faces_dir, "test", "real", 40, tmp_path / "test_real")
    test_fake = _slice(faces_dir, "test", "fake", 40, tmp_path / "test_fake")
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--real",
            str(test_real),
            "--fake",
            str(test_fake),
            "--model",
            str(model),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["n_real"] == 40 and m["n_fake"] == 40
    # 120 training faces are far fewer than the shipped model's 5,961, so the bar is modest;
    # chance would be 0.5.
    assert m["auc"] > 0.8, m

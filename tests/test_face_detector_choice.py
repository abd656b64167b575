"""A face detector registered from outside the package: `train --face-detector` records it in
the model, `detect` finds faces with it, and a model whose detector is gone is refused in one
line (the crops it learned came from that detector; another would score other crops)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter.cli import main
from fakespotter.faces.mtcnn import Face
from fakespotter.faces.pipeline import FFHQ_LANDMARKS
from fakespotter.faces.registry import (
    FaceDetectorSpec,
    register_face_detector,
    unregister_face_detector,
)


class CentreDetector:
    """One face in the middle half of every image, with FFHQ-style landmarks."""

    def __init__(self, min_face_fraction: float = 0.05) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        self.calls += 1
        h, w = image.shape[:2]
        box = (w / 4, h / 4, 3 * w / 4, 3 * h / 4)
        return [Face(box, 0.875, FFHQ_LANDMARKS * np.array([w, h]))]


@pytest.fixture
def centre():
    spec = register_face_detector(
        FaceDetectorSpec(
            name="centre",
            summary="toy: the middle of the image",
            weight_files=(),
            from_files=lambda **options: CentreDetector(**options),
        )
    )
    yield spec
    unregister_face_detector("centre")


def test_train_records_the_face_detector_and_detect_uses_it(tmp_path, centre, weight_file):
    weight_file("dlib")
    real = write_noise_faces(tmp_path / "real", 6, smooth=False, seed=3)
    fake = write_noise_faces(tmp_path / "fake", 6, smooth=True, seed=4)
    model = tmp_path / "m.safetensors"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["train", "--real", str(real), "--fake", str(fake), "--backbone", "dlib",
         "--variant", "layer", "--face-detector", "centre", "--output", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    from fakespotter.persistence import load_model

    assert load_model(model).face_detector == "centre"
    info = runner.invoke(main, ["info", "--model", str(model)])
    assert info.exit_code == 0 and "faces found  by centre" in info.output
    result = runner.invoke(main, ["detect", str(real), "--model", str(model), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 6
    # the toy's box and score, not MTCNN's: the model's detector found these faces
    assert {r["detection_score"] for r in rows} == {0.875}
    assert all(r["box"] == [24.0, 24.0, 72.0, 72.0] for r in rows)

    unregister_face_detector("centre")
    result = runner.invoke(main, ["detect", str(real), "--model", str(model)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "face detector 'centre'" in result.output and "mtcnn" in result.output


def test_train_refuses_an_unknown_face_detector(tmp_path):
    real = write_noise_faces(tmp_path / "real", 2, smooth=False, seed=7)
    result = CliRunner().invoke(
        main,
        ["train", "--real", str(real), "--fake", str(real), "--face-detector", "nosuch",
         "--output", str(tmp_path / "m.safetensors")],
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "nosuch" in result.output and "mtcnn" in result.output

"""Issue #27 (21, 23): the library numbers faces as the rows do (left to right), a photo still
counts by its largest face, and a flat --aligned input has no face to score."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from fakespotter.faces.mtcnn import Face
from fakespotter.faces.pipeline import FaceCropper, largest_face
from fakespotter.rows import face_rows
from fakespotter.training import largest_faces

TEMPLATE = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], float)


def _face(x0: float, y0: float, side: float) -> Face:
    """An upright face box with plausible landmarks inside it."""
    points = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
    return Face(box=(x0, y0, x0 + side, y0 + side), score=0.999, landmarks=points * side + [x0, y0])


class GroupPhoto:
    """A detector that finds three faces, largest first (as MTCNN and YuNet list them)."""

    def detect(self, image):
        return [_face(600, 40, 200), _face(300, 60, 150), _face(20, 50, 100)]


class FaceCheckStub:
    """Stands in for MTCNN where only the aligned input's face check runs."""

    def face_probability(self, image, boxes):
        return np.ones(len(np.reshape(boxes, (-1, 4))))


def test_faces_come_left_to_right_and_the_largest_is_still_the_photos_face(tmp_path):
    cropper = FaceCropper(112, TEMPLATE, detector=GroupPhoto())
    faces = cropper(np.zeros((300, 900, 3), np.uint8))
    assert [f.box[0] for f in faces] == [20, 300, 600]  # the order face_rows numbers them
    rows = face_rows("group.jpg", faces, [0.1, 0.2, 0.3])
    assert [(r.face, r.box[0], r.p_fake) for r in rows] == [
        (0, 20, 0.1),
        (1, 300, 0.2),
        (2, 600, 0.3),
    ]
    assert largest_face(faces) is faces[2] and faces[2].area == 200 * 200
    # training and evaluation count a photo by its largest face, wherever it stands
    Image.new("RGB", (900, 300)).save(tmp_path / "group.png")
    found = largest_faces(cropper, [tmp_path / "group.png"])
    assert np.array_equal(found.crops[0], faces[2].crop)


def test_a_flat_aligned_input_has_no_face():
    cropper = FaceCropper(112, TEMPLATE, aligned=True, detector=FaceCheckStub())
    for colour in ((128, 128, 128), (0, 0, 0), (200, 30, 30)):
        assert cropper(np.full((256, 256, 3), colour, np.uint8)) == []
    # a little JPEG-like noise on grey is still flat; a textured image is a face to check
    rng = np.random.default_rng(0)
    grey = np.clip(128 + rng.normal(0, 1, (256, 256, 3)), 0, 255).astype(np.uint8)
    assert cropper(grey) == []
    (face,) = cropper(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert face.box == (0.0, 0.0, 256.0, 256.0)


def test_detect_gives_a_flat_aligned_input_no_label(tmp_path, tiny_model):
    from fakespotter.cli import main

    grey = tmp_path / "grey.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(grey)
    result = CliRunner().invoke(
        main, ["detect", str(grey), "--model", str(tiny_model), "--aligned", "--format", "json"]
    )
    assert result.exit_code == 0, result.output  # a photo without a face is a result
    (row,) = json.loads(result.stdout)
    assert row["error"] == "no face found" and row["label"] is None and row["p_fake"] is None

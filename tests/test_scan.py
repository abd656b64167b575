"""fakespotter.photos: walking folders, finding faces and scoring them, one row per file
whatever goes wrong with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from conftest import write_faces

from fakespotter import photos
from fakespotter.photos import Faces, find_faces, iter_files, score_rows


def test_folder_vanishing_mid_walk_gets_an_error_row(tmp_path):
    a = write_faces(tmp_path / "a", 1, smooth=False, seed=0)
    b = write_faces(tmp_path / "b", 1, smooth=False, seed=0)
    walk = iter_files([tmp_path])
    assert next(walk) == a[0]
    shutil.rmtree(tmp_path / "b")  # gone before the walk reaches it
    rest = list(walk)
    assert rest == [tmp_path / "b"]  # the folder itself stands in for its lost files
    found = list(find_faces(lambda image: [], rest))
    assert found[0].error == "file not found"
    assert not b[0].exists()


def test_a_crashing_face_finder_costs_one_row_not_the_scan(tmp_path):
    files = write_faces(tmp_path, 3, smooth=False, seed=0)

    def cropper(image):
        if cropper.calls == 1:
            cropper.calls += 1
            raise ValueError("degenerate landmarks\nsecond line")
        cropper.calls += 1
        return []

    cropper.calls = 0
    found = list(find_faces(cropper, files))
    assert [f.error for f in found] == [
        photos.NO_FACE,
        "face detection failed (degenerate landmarks)",
        photos.NO_FACE,
    ]


def test_score_rows_keeps_a_files_faces_together():
    class Half:  # a stand-in detector: FakeSpotter.assess's one required key
        def assess(self, crops):
            return {"p_fake": np.full(len(crops), 0.5)}

    face = photos.FaceCrop((0, 0, 1, 1), None, np.zeros((5, 2)), np.zeros((4, 4, 3), np.uint8))
    found = [Faces(Path(f"{i}.png"), [face] * 3) for i in range(4)]
    rows = list(score_rows(Half(), found, batch_size=2))
    assert [r.path for r in rows] == [p for i in range(4) for p in [f"{i}.png"] * 3]
    assert [r.face for r in rows] == [0, 1, 2] * 4

"""Video faces carry what photo faces carry (issue #27 item 16): detection score, face size,
novelty and warnings, by the same rules. Each track keeps them per sampled frame and sums
them up (lowest detection score, smallest face, highest novelty, every kind of warning seen),
and a video's rows in `fakespotter detect` have the same fields as a photo's."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_detector import tiny_backbone, toy_faces
from test_video import ScriptedCropper, write_grey_video

from fakespotter.detector import FakeSpotter
from fakespotter.faces.pipeline import MIN_DETECTION_SCORE, MIN_MEASURED_FACE_PX, FaceCrop
from fakespotter.photos import Faces, score_rows, video_rows
from fakespotter.video import scan_video

pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")


@pytest.fixture(scope="module")
def det() -> FakeSpotter:
    """A tiny detector with a novelty signal whose limit flags about half the toy faces."""
    X, y = toy_faces(60)
    det = FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3, Cs=(0.1,)).fit(X, y)
    features = det.transform(X)
    det.fit_novelty(features, n_components=5)
    det.set_novelty_limit(float(np.median(det.novelty(features))))
    return det


def face(crop: np.ndarray, x: float, score: float, size: float) -> FaceCrop:
    return FaceCrop(
        box=(x, 0.0, x + size, size),
        score=score,
        landmarks=np.zeros((5, 2)),
        crop=crop,
        size=size,
    )


def test_track_fields_per_frame_and_summed_up(det, tmp_path):
    """One person over three frames: a small face in two, a low detection score in one."""
    X, _ = toy_faces(6, seed=4)
    novelty = det.novelty(det.transform(X[:3]))
    frames = [
        [face(X[0], 10, 0.99, 80)],
        [face(X[1], 11, 0.5, 40)],
        [face(X[2], 12, 0.97, 30)],
    ]
    clip = write_grey_video(tmp_path / "one.mp4", 3)
    found = iter(frames)
    result = scan_video(clip, det, lambda image: next(found), fps=10, min_similarity=-1)
    [track] = result["tracks"]
    assert result["tracking"] == "identity"
    assert track["detection_scores"] == [0.99, 0.5, 0.97]
    assert track["face_sizes"] == [80, 40, 30]
    assert track["novelties"] == pytest.approx([round(float(v), 3) for v in novelty])
    # the summaries: the least sure detection, the smallest face, the most unusual face
    assert track["detection_score"] == 0.5 and track["face_size"] == 30
    assert track["novelty"] == max(track["novelties"])
    # each frame's warnings exactly as a photo row of that face says them
    photo_rows = list(score_rows(det, [Faces(f"{i}.png", faces) for i, faces in enumerate(frames)]))
    assert track["warnings"] == [row.warning for row in photo_rows]
    assert [row.novelty for row in photo_rows] == track["novelties"]
    assert [row.detection_score for row in photo_rows] == track["detection_scores"]
    # the track's warning: each kind of warning once, with the frames it was given in
    warning = track["warning"]
    assert "2 of 3 frames: small face (40 px" in warning
    assert f"1 of 3 frames: low face-detection confidence (0.50 < {MIN_DETECTION_SCORE})" in warning
    flagged = sum(v > det.novelty_threshold_ for v in novelty)
    if flagged:
        assert f"{flagged} of 3 frames: unlike the faces the model was trained on" in warning
    assert str(MIN_MEASURED_FACE_PX) in warning and "\n" not in warning


def test_a_one_frame_track_says_what_a_photo_says(det, tmp_path):
    X, _ = toy_faces(8, seed=5)
    novelty = det.novelty(det.transform(X))
    i = int(np.argmax(novelty))  # a face over the novelty limit
    assert novelty[i] > det.novelty_threshold_
    the_face = face(X[i], 5, 0.8, 50)
    clip = write_grey_video(tmp_path / "one.mp4", 1)
    [row] = video_rows(det, lambda image: [the_face], clip, fps=1, model="m")
    [photo] = list(score_rows(det, [Faces("a.png", [the_face])], model="m"))
    assert row.warning == photo.warning and "novelty" in row.warning and "small face" in row.warning
    assert row.novelty == photo.novelty and row.detection_score == photo.detection_score == 0.8
    assert row.face_size == photo.face_size == 50
    assert row.p_fake == pytest.approx(photo.p_fake) and row.label == photo.label
    assert row.start == row.end == 0.0 and photo.start is None


def test_a_track_without_warnings_has_none(det, tmp_path):
    X, _ = toy_faces(8, seed=5)
    quiet = det.novelty(det.transform(X)) <= det.novelty_threshold_
    crops = X[quiet][:2]
    frames = iter([[face(c, 10, 0.99, 100)] for c in crops])
    clip = write_grey_video(tmp_path / "two.mp4", 2)
    result = scan_video(clip, det, lambda image: next(frames), fps=10, min_similarity=-1)
    [track] = result["tracks"]
    assert track["warning"] is None and track["warnings"] == [None, None]


def test_stand_ins_without_novelty_or_detection_scores_still_work(tmp_path):
    """A detector that only has predict_proba, and faces without scores or sizes (aligned
    inputs, stand-ins): the fields are there, None."""
    from test_video import ScriptedDetector

    clip = write_grey_video(tmp_path / "two.mp4", 2)
    cropper = ScriptedCropper([[(0, 0, 20, 20)], [(1, 0, 21, 20)]])
    result = scan_video(clip, ScriptedDetector([0.2, 0.3]), cropper, fps=10)
    [track] = result["tracks"]
    assert track["novelties"] == [None, None] and track["novelty"] is None
    assert track["detection_scores"] == [None, None] and track["detection_score"] is None
    assert track["warnings"] == [None, None] and track["warning"] is None
    assert track["face_sizes"] == [None, None] and track["face_size"] is None
    [row] = video_rows(ScriptedDetector([0.2, 0.3]), ScriptedCropper(cropper.boxes_per_frame),
                       clip, fps=10)  # fmt: skip
    assert row.novelty is None and row.warning is None and row.p_fake == pytest.approx(0.25)


def test_the_server_scores_video_faces_under_its_lock_with_the_same_fields(det, tmp_path):
    from fakespotter.serve.analysis import _OneAtATime

    X, _ = toy_faces(3, seed=4)
    frames = iter([[face(X[k], 10, 0.99, 30)] for k in range(3)])
    lock = threading.Lock()
    held = []
    assess = det.assess

    class Watched:  # the detector, recording whether the lock is held while it scores
        def __getattr__(self, name):
            return getattr(det, name)

        def assess(self, crops, **kwargs):
            held.append(lock.locked())
            return assess(crops, **kwargs)

    locked = _OneAtATime(lambda image: next(frames), Watched(), lock)
    clip = write_grey_video(tmp_path / "three.mp4", 3)
    result = scan_video(clip, locked, locked, fps=10, min_similarity=-1)
    [track] = result["tracks"]
    assert held == [True] and not lock.locked()
    assert result["tracking"] == "identity"
    assert track["face_size"] == 30 and track["novelty"] is not None
    assert "3 of 3 frames: small face" in track["warning"]

"""Videos: frame sampling, face tracking and the per-track and per-video summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakespotter.video import VideoError, iou, link_faces, plot_timeline, sample_frames, scan_video

av = pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"
VIDEO_FPS = 10
N_FRAMES = 20  # 2 seconds
CROP = 384


def write_panning_video(path: Path) -> list[int]:
    """The astronaut photo seen through a window that slides right by 3 px a frame.

    Returns the window's left edge for each frame."""
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    lefts = [3 * i for i in range(N_FRAMES)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width = stream.height = CROP
        stream.pix_fmt = "yuv420p"
        for left in lefts:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[64:64 + CROP, left:left + CROP]),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return lefts


class ScriptedDetector:
    """Stands in for a fitted FakeSpotter: returns the given scores, one per crop, in order."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.seen = 0

    def predict_proba(self, crops):
        assert crops.dtype == np.uint8 and crops.ndim == 4
        p = np.array(self.scores[self.seen:self.seen + len(crops)])
        self.seen += len(crops)
        return np.column_stack([1 - p, p])


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "pan.mp4"
    write_panning_video(path)
    return path


def test_sample_frames_takes_one_frame_per_interval(video):
    frames = list(sample_frames(video, fps=4))
    times = [t for t, _ in frames]
    # at 10 fps, the first frame at or after each quarter second
    assert times == pytest.approx([0.0, 0.3, 0.5, 0.8, 1.0, 1.3, 1.5, 1.8])
    assert frames[0][1].shape == (CROP, CROP, 3) and frames[0][1].dtype == np.uint8
    assert len(list(sample_frames(video, fps=100, max_frames=5))) == 5
    assert len(list(sample_frames(video, fps=100))) == N_FRAMES  # never more than the source has


def test_unreadable_video_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is no video")
    with pytest.raises(VideoError, match="cannot open video"):
        list(sample_frames(bad))


def test_link_faces_follows_moving_boxes_and_splits_strangers():
    a = [(0, 0, 10, 10), (1, 0, 11, 10), (2, 0, 12, 10), (3, 0, 13, 10)]
    b = [(50, 50, 60, 60), (50, 51, 60, 61), None, (51, 51, 61, 61)]  # missed once
    frames = [[a[f]] + ([b[f]] if b[f] else []) for f in range(4)]
    ids = link_faces(frames)
    assert [row[0] for row in ids] == [0, 0, 0, 0]
    assert ids[0][1] == ids[1][1] == ids[3][1] == 1  # survives a one-frame gap
    # the same box three frames later is a new face, as is one far away
    assert link_faces([[a[0]], [], [], [a[0]]]) == [[0], [], [], [1]]
    assert link_faces([[a[0]], [(30, 30, 40, 40)]]) == [[0], [1]]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_scan_video_finds_one_track(video, weight_file):
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    from fakespotter.faces.pipeline import FFHQ_LANDMARKS, FaceCropper

    cropper = FaceCropper(112, FFHQ_LANDMARKS * 112, progress=False)
    scores = [0.2, 0.7, 0.9, 0.4, 0.6, 0.1, 0.8, 0.3]
    result = scan_video(video, ScriptedDetector(scores), cropper, fps=4)

    assert result["n_frames"] == 8 and len(result["times"]) == 8
    assert len(result["tracks"]) == 1, result["tracks"]
    track = result["tracks"][0]
    assert track["n_frames"] == 8 and track["p_fake"] == scores
    assert track["start"] == pytest.approx(0.0) and track["end"] == result["times"][-1]
    assert track["mean"] == pytest.approx(np.mean(scores)) and track["max"] == 0.9
    assert track["fraction_fake"] == pytest.approx(4 / 8)
    assert track["label"] == "fake"  # mean 0.5
    # the window slides right, so her face moves left in the frame
    centres = [(b[0] + b[2]) / 2 for b in track["boxes"]]
    assert centres[-1] < centres[0] - 20
    assert 80 < centres[0] < 260
    v = result["video"]
    assert v == {"n_faces": 8, "n_tracks": 1, "n_frames_with_faces": 8,
                 "mean": pytest.approx(np.mean(scores)), "max": 0.9,
                 "fraction_fake": pytest.approx(0.5), "label": "fake"}


def test_video_summary_without_faces_and_timeline_plot(video, tmp_path):
    class NoFaces:
        def __call__(self, image):
            return []

    result = scan_video(video, ScriptedDetector([]), NoFaces(), fps=2)
    assert result["n_frames"] == 4 and result["tracks"] == []
    assert result["video"]["label"] is None and result["video"]["n_faces"] == 0
    png = tmp_path / "none.png"
    plot_timeline(result, png)
    assert Image.open(png).size == (800, 320)


def test_timeline_plot_draws_tracks(tmp_path):
    result = {"path": "x.mp4", "fps": 1.0, "times": [0.0, 1.0, 2.0], "tracks": [
        {"track": 0, "times": [0.0, 1.0, 2.0], "p_fake": [0.1, 0.2, 0.9], "mean": 0.4},
        {"track": 1, "times": [1.0, 2.0], "p_fake": [0.8, 0.7], "mean": 0.75}]}
    png = tmp_path / "timeline.png"
    plot_timeline(result, png)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (320, 800, 3)
    assert (np.abs(pixels.astype(int) - [31, 119, 180]).sum(-1) < 30).sum() > 100  # track 1 line


def test_detect_command_scores_a_video_by_track(video, tmp_path, weight_file, tiny_model):
    """`fakespotter detect clip.mp4`: one row per face track, plus a timeline with --report."""
    import json

    from click.testing import CliRunner

    from fakespotter.cli import main

    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    model = tiny_model
    runner = CliRunner()
    (tmp_path / "clips").mkdir()
    video.rename(tmp_path / "clips" / "pan.mp4")
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video")
    result = runner.invoke(main, ["detect", str(tmp_path / "clips"), "--model", str(model),
                                  "--format", "json", "--fps", "5",
                                  "--report", str(tmp_path / "timeline")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["path"]).name for r in rows] == ["broken.mp4", "pan.mp4"]
    assert rows[0]["error"] and rows[0]["p_fake"] is None
    assert rows[1]["face"] == 0 and 0 <= rows[1]["p_fake"] <= 1 and rows[1]["error"] is None
    timeline = json.loads((tmp_path / "timeline" / "pan.json").read_text())
    assert timeline["n_frames"] == 10 and len(timeline["tracks"]) == 1
    assert (tmp_path / "timeline" / "pan.png").stat().st_size > 1000

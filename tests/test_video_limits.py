"""A video cannot make a scan hang or eat the machine (issue #27 items 5 and 6): a frame with
a huge timestamp, too many frames, or frames of more pixels than a photo may have are refused
with a one-line reason, before any frame of that size is turned into an RGB array."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from fakespotter import video as video_module
from fakespotter.photos import video_rows
from fakespotter.video import VideoError, sample_frames, scan_video

av = pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")

# A regression hangs (the old sampling loop stepped 1/fps at a time up to the timestamp: 92 s
# for a frame at 1e9 s, days for 1e13 s); the timeout turns it into a failure.
pytestmark = pytest.mark.timeout(60)


def write_stamped_video(path: Path, seconds: list[float], size: int = 32) -> Path:
    """A grey Matroska clip with one frame at each of these times (in seconds): frames are
    encoded in order, then each packet is stamped with its time, as a crafted file could be."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        packets = []
        for _ in seconds:
            frame = np.full((size, size, 3), 128, np.uint8)
            packets += stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
        packets += stream.encode()
        for packet, t in zip(packets, seconds, strict=True):
            packet.pts = packet.dts = int(round(t / packet.time_base))
            container.mux(packet)
    return path


class NoFaces:
    """A stand-in cropper (no face in any frame) that records the frames it was given."""

    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def __call__(self, image):
        self.shapes.append(image.shape)
        return []


class NeverScores:
    def predict_proba(self, crops):
        raise AssertionError("no face, nothing to score")


@pytest.mark.parametrize("far", [1e9, 1e13])
def test_a_frame_at_a_huge_time_is_refused_in_one_line(tmp_path, far):
    clip = write_stamped_video(tmp_path / "far.mkv", [0.0, 0.5, far])
    with pytest.raises(VideoError, match="hours") as info:
        list(sample_frames(clip, fps=1))
    assert "\n" not in str(info.value)
    # the command line's video rows: one error row for the file, no hang
    [row] = video_rows(NeverScores(), NoFaces(), clip, fps=1)
    assert row.error and "hours" in row.error and row.p_fake is None


def test_the_next_sample_time_is_computed_not_counted_up_to(tmp_path):
    """With the length limit out of the way, a frame 1e13 s in is sampled at once."""
    clip = write_stamped_video(tmp_path / "far.mkv", [0.0, 0.2, 0.5, 1.0, 1e13])
    times = [t for t, _ in sample_frames(clip, fps=2, max_seconds=1e14)]
    assert times == pytest.approx([0.0, 0.5, 1.0, 1e13])
    # frames that do not start at 0 (an MPEG-TS offset): the length counts from the first
    clip = write_stamped_video(tmp_path / "late.mkv", [80_000.0, 80_000.5, 80_001.0])
    times = [t for t, _ in sample_frames(clip, fps=1, max_seconds=3600)]
    assert times == pytest.approx([80_000.0, 80_001.0])


def test_too_many_frames_are_refused_in_one_line(tmp_path):
    clip = write_stamped_video(tmp_path / "many.mkv", [i / 10 for i in range(12)])
    assert len(list(sample_frames(clip, fps=100, max_decoded=12))) == 12
    with pytest.raises(VideoError, match="more than 10 frames"):
        list(sample_frames(clip, fps=100, max_decoded=10))


def test_default_limits_are_generous():
    assert video_module.MAX_SECONDS >= 12 * 3600
    assert video_module.MAX_DECODED_FRAMES >= video_module.MAX_SECONDS * 60


def test_frames_over_the_pixel_limit_are_refused_before_conversion(tmp_path, monkeypatch):
    clip = write_stamped_video(tmp_path / "wide.mkv", [0.0, 0.1], size=64)
    converted = []
    to_ndarray = av.VideoFrame.to_ndarray

    def counting(frame, *args, **kwargs):
        converted.append((frame.width, frame.height))
        return to_ndarray(frame, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    with pytest.raises(VideoError) as info:
        list(sample_frames(clip, max_pixels=64 * 64 - 1))
    message = str(info.value)
    assert "64x64 pixels" in message and "limit 4,095" in message and "--max-pixels" in message
    assert "\n" not in message and converted == []
    # at the limit the frames are read
    assert [f.shape for _, f in sample_frames(clip, fps=10, max_pixels=64 * 64)] == [
        (64, 64, 3),
        (64, 64, 3),
    ]
    # scan_video and the command line's rows pass the limit on
    cropper = NoFaces()
    with pytest.raises(VideoError, match="64x64 pixels"):
        scan_video(clip, NeverScores(), cropper, max_pixels=4000)
    assert cropper.shapes == []
    [row] = video_rows(NeverScores(), cropper, clip, fps=1, max_pixels=4000)
    assert "64x64 pixels" in row.error and cropper.shapes == []


def test_the_photo_limit_is_the_default(tmp_path):
    from fakespotter.faces.io import MAX_PIXELS

    clip = write_stamped_video(tmp_path / "small.mkv", [0.0])
    cropper = NoFaces()
    scan_video(clip, NeverScores(), cropper)
    assert cropper.shapes == [(32, 32, 3)]
    assert inspect.signature(sample_frames).parameters["max_pixels"].default == MAX_PIXELS
    assert inspect.signature(scan_video).parameters["max_pixels"].default == MAX_PIXELS


@pytest.mark.slow
def test_server_answers_a_huge_timestamp_with_422_and_removes_the_upload(
    tmp_path, monkeypatch, tiny_model
):
    pytest.importorskip("fastapi")
    import tempfile

    from fastapi.testclient import TestClient

    from fakespotter.persistence import load_model
    from fakespotter.serve.app import create_app

    clip = write_stamped_video(tmp_path / "far.mkv", [0.0, 0.5, 1e13])
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    client = TestClient(create_app(detector=load_model(tiny_model), aligned=True))
    r = client.post(
        "/api/detect-video",
        files={"video": ("far.mkv", clip.read_bytes(), "video/x-matroska")},
        data={"fps": "1"},
    )
    assert r.status_code == 422 and "hours" in r.json()["detail"], r.text
    assert str(uploads) not in r.json()["detail"]
    assert list(uploads.iterdir()) == []

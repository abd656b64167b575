"""Reading a video leaves no frame-conversion threads behind.

PyAV (17 and later) converts frames with a reformatter cached per thread, whose swscale
context starts a pool of slice threads unless told otherwise. Once the reading thread ended
(a server's worker thread), that reformatter stayed as cyclic garbage holding its pool; a
later fork whose child collected it hung in ``pthread_cond_destroy`` (CI: Ray's
``gcs_server`` never started after the browser test had sent a video to the server)."""

from __future__ import annotations

import gc
import os
import threading

import pytest
from test_video_limits import write_stamped_video

from fakespotter.video import sample_frames

pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)"
)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_reading_a_video_starts_no_threads_that_outlive_it(tmp_path):
    clip = write_stamped_video(tmp_path / "clip.mkv", [i / 10 for i in range(10)], size=256)
    gc.collect()
    before = _threads()
    frames = list(sample_frames(clip, fps=10))
    assert len(frames) == 10
    assert _threads() <= before  # the caller's thread: its cached reformatter has no pool

    reader = threading.Thread(target=lambda: list(sample_frames(clip, fps=10)))
    reader.start()
    reader.join()
    assert _threads() <= before  # nor one left behind by a finished thread

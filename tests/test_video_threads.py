"""Reading a video leaves no frame-conversion threads behind.

PyAV (17 and later) converts frames with a reformatter cached per thread, whose swscale
context starts a pool of slice threads unless told otherwise. Once the reading thread ended
(a server's worker thread), that reformatter stayed as cyclic garbage holding its pool; a
later fork whose child collected it hung in ``pthread_cond_destroy`` (CI: Ray's
``gcs_server`` never started after the browser test had sent a video to the server).

The threads are counted in a fresh process: in the test session other tests' threads come
and go."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_video_limits import write_stamped_video

pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)"
)

COUNT = """
import gc, json, os, sys, threading, time
from fakespotter.video import sample_frames

def threads():
    return len(os.listdir("/proc/self/task"))

def settled(limit):  # an ended thread leaves /proc a moment after join()
    for _ in range(50):
        if threads() <= limit:
            break
        time.sleep(0.02)
    return threads()

clip = sys.argv[1]
gc.collect()
before = threads()
n = len(list(sample_frames(clip, fps=10)))
after_main = settled(before)
reader = threading.Thread(target=lambda: list(sample_frames(clip, fps=10)))
reader.start()
reader.join()
after_thread = settled(before)
print(json.dumps([n, before, after_main, after_thread]))
"""


def test_reading_a_video_starts_no_threads_that_outlive_it(tmp_path):
    clip = write_stamped_video(tmp_path / "clip.mkv", [i / 10 for i in range(10)], size=256)
    done = subprocess.run(
        [sys.executable, "-c", COUNT, str(clip)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    frames, before, after_main, after_thread = json.loads(done.stdout.splitlines()[-1])
    assert frames == 10
    assert after_main <= before  # the caller's thread: its cached reformatter has no pool
    assert after_thread <= before  # nor one left behind by a finished thread

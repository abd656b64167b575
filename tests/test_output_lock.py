"""Two commands writing the same output at once (issue #27, item 8): the second one is refused
in one line while the first holds the output, for a `detect --output` file and a `scan`
folder. The first is a real process; the second runs in this one (the lock is between
processes, and this one has the library imported already)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_csv, write_noise_faces

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="outputs are locked with flock, POSIX only"
)

# The first process stops after reading 4 photos until the test creates the gate file, so the
# second one is certain to start while the first is half-way through its output.
_GATED = """
import os, sys, time
import fakespotter.photos as photos
load, calls = photos.load_image, [0]
gate = os.environ["FAKESPOTTER_TEST_GATE"]
def gated_load(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 5:
        open(gate + ".waiting", "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
    return load(*args, **kwargs)
photos.load_image = gated_load
from fakespotter.cli import main
main(sys.argv[1:], prog_name="fakespotter")
"""


def _env(gate: Path) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), FAKESPOTTER_TEST_GATE=str(gate))


def _run_beside_a_gated_first(tmp_path: Path, args: list[str], seconds: list[list[str]]):
    """Start `args` gated, run each of `seconds` in this process while the first waits, then
    let the first finish; returns (first's exit code, its stderr, the seconds' results)."""
    from click.testing import CliRunner

    from fakespotter.cli import main

    gate = tmp_path / "gate"
    env = _env(gate)
    first = subprocess.Popen(
        [sys.executable, "-c", _GATED, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{gate}.waiting").exists():
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            assert time.monotonic() < deadline, "the first process never reached its 5th photo"
            time.sleep(0.02)
        results = [CliRunner().invoke(main, second) for second in seconds]
    finally:
        gate.touch()
        try:
            _, first_err = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
    return first.returncode, first_err.decode(), results


@pytest.mark.slow
def test_two_detects_on_one_output_the_second_is_refused(tmp_path, tiny_model):
    photos = write_noise_faces(tmp_path / "photos", 12, smooth=False, seed=11)
    out = tmp_path / "rows.csv"
    args = ["detect", str(photos), "--model", str(tiny_model), "--aligned", "--output", str(out)]
    args += ["--batch-size", "1"]
    code, err, (second,) = _run_beside_a_gated_first(tmp_path, args, [[*args, "--resume"]])
    assert second.exit_code == 1, second.output
    assert "being written by another" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert code == 0, err
    paths = [r["path"] for r in read_csv(out)]
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir())  # each photo once


@pytest.mark.slow
def test_two_scans_into_one_folder_the_second_is_refused(tmp_path, tiny_model):
    pytest.importorskip("pyarrow", reason="fakespotter scan needs pyarrow")
    from fakespotter.collection.store import read_scan

    photos = write_noise_faces(tmp_path / "photos", 12, smooth=False, seed=12)
    out = tmp_path / "scan"
    args = ["scan", str(photos), "--model", str(tiny_model), "--aligned", "--output", str(out)]
    args += ["--batch-size", "1", "--part-size", "1", "--workers", "1"]
    seconds = [[*args, flag] for flag in ("--resume", "--overwrite")]
    code, err, refused = _run_beside_a_gated_first(tmp_path, args, seconds)
    for second in refused:
        assert second.exit_code == 1, second.output
        assert "being written by another" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    assert code == 0, err
    paths = read_scan(out).column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir())  # each photo once


def test_lock_is_released_and_a_second_lock_in_this_process_is_refused(tmp_path):
    from fakespotter.errors import UserError
    from fakespotter.results import lock_output

    out = tmp_path / "rows.csv"
    with lock_output(out):
        with pytest.raises(UserError, match="being written by another"):
            with lock_output(out):
                pass
    with lock_output(out):  # released: free again
        pass
    assert not out.exists()  # a lock alone leaves no empty file behind


def test_a_detect_that_fails_before_writing_leaves_no_output(tmp_path):
    from click.testing import CliRunner

    from fakespotter.cli import main

    write_noise_faces(tmp_path / "photos", 1, smooth=False, seed=13)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(
        main, ["detect", str(tmp_path / "photos"), "--model", str(bad), "--output", str(out)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not out.exists()  # the lock's empty file went with the failed command

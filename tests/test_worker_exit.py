"""Worker processes die with their driver (issue #27, item 9): a `scan --workers 2` or
`--workers 2 detect` killed with SIGKILL leaves no worker running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_noise_faces

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds worker processes through Linux's /proc"
)

_MAIN = "import sys; from fakespotter.cli import main; main(sys.argv[1:], prog_name='fakespotter')"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "(command name)"
    return fields[0], int(fields[1])


def _workers_of(pid: int) -> list[int]:
    """The multiprocessing workers (spawned children) of process ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _stat(int(entry.name)) is None:
            continue
        if _stat(int(entry.name))[1] != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited


@pytest.mark.slow
@pytest.mark.parametrize("command", ["scan", "detect"])
def test_killed_driver_takes_its_workers_with_it(tmp_path, tiny_model, command):
    if command == "scan":
        pytest.importorskip("pyarrow", reason="fakespotter scan needs pyarrow")
    photos = write_noise_faces(tmp_path / "photos", 80, smooth=False, seed=21)
    out = tmp_path / "out"
    common = [str(photos), "--model", str(tiny_model), "--aligned", "--output"]
    args = {
        "scan": ["scan", *common, str(out), "--workers", "2", "--batch-size", "1",
                 "--part-size", "1"],
        "detect": ["--workers", "2", "detect", *common, str(out), "--format", "csv",
                   "--batch-size", "1"],
    }[command]  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        # the workers have done work: the output holds rows (a part, or csv rows)
        while not (len(workers) == 2 and _has_rows(out)):
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, f"no output and workers {workers}"
            time.sleep(0.05)
            workers = _workers_of(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a timing
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "workers outlived their killed driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in workers:  # the processes this test started: none may be left behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _has_rows(out: Path) -> bool:
    if out.is_dir():
        return any(out.glob("part-*.parquet"))
    return out.is_file() and out.read_bytes().count(b"\n") >= 2

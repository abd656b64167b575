"""fakespotter.results: writing result rows (csv, jsonl, json, table) and resuming a scan
that was cut short."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import read_csv, write_faces

from fakespotter.cli import main
from fakespotter.results import RowWriter, resume
from fakespotter.rows import FIELDS, Row

# -- resuming ------------------------------------------------------------------------------

_SLOW_DETECT = """
import sys, time
import fakespotter.photos as photos
load = photos.load_image
def slow_load(*args, **kwargs):
    time.sleep(0.03)  # make the scan last long enough to be killed half-way
    return load(*args, **kwargs)
photos.load_image = slow_load
from fakespotter.cli import EXIT_INPUTS_FAILED, main
main(sys.argv[1:], prog_name="fakespotter")
"""


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, trained):
    files = write_faces(tmp_path / "photos", 40, smooth=False, seed=7)
    out = tmp_path / "rows.csv"
    args = [
        "detect",
        str(tmp_path / "photos"),
        "--model",
        str(trained),
        "--aligned",
        "--format",
        "csv",
        "--output",
        str(out),
        "--batch-size",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_DETECT, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "stderr", "wb"),
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    killed_at = out.read_bytes()
    assert 5 <= killed_at.count(b"\n") < 41  # header + some rows, not all 40
    with open(out, "ab") as f:
        f.write(b"/half/written/row.png,0,0.0 0.0 96")  # as if killed inside a write

    result = CliRunner().invoke(main, args + ["--resume"])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(killed_at) and data.endswith(b"\n")
    assert data.count(b"path,face,box") == 1
    paths = [r["path"] for r in read_csv(out)]
    assert sorted(paths) == sorted(map(str, files)) and len(set(paths)) == 40
    n_done = killed_at.count(b"\n") - 1
    assert f"{n_done} files were already in" in result.output


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_from_any_cut(tmp_path, trained, fmt):
    files = write_faces(tmp_path / "photos", 4, smooth=True, seed=3)
    odd = tmp_path / "photos" / 'x\n"y",z.png'
    shutil.copy(files[0], odd)
    runner = CliRunner()
    full = tmp_path / f"full.{fmt}"
    args = [
        "detect",
        str(tmp_path / "photos"),
        "--model",
        str(trained),
        "--aligned",
        "--format",
        fmt,
    ]
    assert runner.invoke(main, args + ["--output", str(full)]).exit_code == 0
    whole = full.read_bytes()
    rows = whole.count(b"\n")
    cut_points = [5, len(whole) // 2, len(whole) - 1]  # in the header, mid-row, last newline
    part = tmp_path / f"part.{fmt}"
    for cut in cut_points:
        part.write_bytes(whole[:cut])
        result = runner.invoke(main, args + ["--output", str(part), "--resume"])
        assert result.exit_code == 0, (cut, result.output)
        assert part.read_bytes().count(b"\n") == rows, cut
        if fmt == "csv":
            assert sorted(r["path"] for r in read_csv(part)) == sorted(
                r["path"] for r in read_csv(full)
            )
        else:
            got = [json.loads(line) for line in part.read_text().splitlines()]
            want = [json.loads(line) for line in full.read_text().splitlines()]
            assert sorted(r["path"] for r in got) == sorted(r["path"] for r in want)
    result = runner.invoke(main, args + ["--output", str(part), "--resume"])
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_resume_refuses_files_it_did_not_write(tmp_path):
    stranger = tmp_path / "notes.csv"
    stranger.write_text("my,own,data\n1,2,3\n")
    with pytest.raises(ValueError, match="not a fakespotter csv"):
        resume(stranger, "csv")
    assert stranger.read_text() == "my,own,data\n1,2,3\n"
    with pytest.raises(ValueError, match="--format csv or jsonl"):
        resume(stranger, "json")
    result = CliRunner().invoke(
        main,
        [
            "detect",
            str(tmp_path),
            "--format",
            "json",
            "--resume",
            "--output",
            str(tmp_path / "x.json"),
        ],
    )
    assert result.exit_code == 2 and "--resume needs" in result.output


def test_writer_keeps_non_utf8_paths_exact():
    name = os.fsdecode(b"/photos/caf\xe9\n.png")
    rows = [
        Row(path=name, error="not an image"),
        Row(path="/p/b.png", face=0, box=[0.0, 1.0], p_fake=0.25, label="real"),
    ]
    for fmt in ("csv", "jsonl", "json", "table"):
        buf = io.BytesIO()
        writer = RowWriter(buf, fmt)
        writer.write(rows[:1])
        writer.write(rows[1:])
        writer.close()
        data = buf.getvalue()
        if fmt == "csv":
            back = list(
                csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
            )
            assert back[0] == FIELDS and os.fsencode(back[1][0]) == b"/photos/caf\xe9\n.png"
        elif fmt == "jsonl":
            back = [json.loads(line) for line in data.decode("ascii").splitlines()]
            assert os.fsencode(back[0]["path"]) == b"/photos/caf\xe9\n.png"
        elif fmt == "json":
            back = json.loads(data.decode("ascii"))
            assert back[1]["p_fake"] == 0.25 and os.fsencode(back[0]["path"]).endswith(
                b"\xe9\n.png"
            )
        else:
            assert b"caf\xe9\n.png  (not an image)" in data

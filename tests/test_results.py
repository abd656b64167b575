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
from fakespotter.words import plural

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


# -- a full disk (issue #27, item 10) --------------------------------------------------------


class _FullAfter(io.FileIO):
    """A real file with room for ``room`` more bytes: a write that crosses it is short (as
    write(2) is on a full disk), the next one fails with ENOSPC."""

    def __init__(self, path, room: int):
        super().__init__(path, "wb")
        self.room = room

    def write(self, data) -> int:
        import errno

        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = super().write(bytes(data)[: self.room])
        self.room -= n
        return n


def _rows(n: int) -> list[Row]:
    return [Row(path=f"/photos/{i:03d}.png", face=0, box=[1.0, 2.0, 3.0, 4.0], p_fake=0.5,
                label="fake", model="m") for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("room", [10, 200, 333, 1000])
def test_full_disk_leaves_whole_rows_and_one_line(tmp_path, fmt, room):
    from fakespotter.errors import UserError

    path = tmp_path / f"rows.{fmt}"
    with _FullAfter(path, room) as f:
        with pytest.raises(UserError) as failed:
            writer = RowWriter(f, fmt, fsync_every=2)
            for row in _rows(20):
                writer.write([row])
            writer.close()
    message = str(failed.value)
    assert len(message.splitlines()) == 1 and "No space left on device" in message
    assert str(path) in message and "--resume" in message
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")  # nothing half-written
    kept, header = resume(path, fmt)  # the file is one resume can continue
    assert len(kept) == data.count(b"\n") - (fmt == "csv" and data != b"")
    assert f"last whole row ({plural(len(kept), 'row')} written by this command)" in message


def test_failed_fsync_drops_the_rows_since_the_last_good_one(tmp_path, monkeypatch):
    import errno

    from fakespotter import results
    from fakespotter.errors import UserError

    synced = []

    def fsync(fd):  # the first fsync works, the second finds the disk failing
        if synced:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        synced.append(fd)

    monkeypatch.setattr(results.os, "fsync", fsync)
    path = tmp_path / "rows.jsonl"
    with open(path, "wb", buffering=0) as f:
        writer = RowWriter(f, "jsonl", fsync_every=2, name=path)
        with pytest.raises(UserError, match=r"ends at its last whole row \(2 rows written"):
            for row in _rows(5):
                writer.write([row])
        writer.close()  # after the failure: writes nothing more, raises nothing
    assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == [
        "/photos/000.png",
        "/photos/001.png",
    ]


_FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from fakespotter.cli import main
main(sys.argv[1:], prog_name="fakespotter")
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_detect_on_a_full_disk_then_resume(tmp_path, trained):
    """A real process whose files cannot grow past 1000 bytes: the kernel's short write, then
    its error, as on a full disk."""
    files = write_faces(tmp_path / "photos", 12, smooth=False, seed=9)
    out = tmp_path / "rows.csv"
    args = ["detect", str(tmp_path / "photos"), "--model", str(trained), "--aligned",
            "--output", str(out), "--batch-size", "1"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    full = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT, "1000", *args],
        env=env,
        capture_output=True,
        timeout=300,
    )
    stderr = full.stderr.decode()
    assert full.returncode == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    data = out.read_bytes()
    assert 0 < len(data) <= 1000 and data.endswith(b"\n")
    rows = read_csv(out)
    assert all(len(r) == len(FIELDS) and None not in r.values() for r in rows)
    assert f"({plural(len(rows), 'row')} written by this command)" in stderr
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    paths = [r["path"] for r in read_csv(out)]
    assert sorted(paths) == sorted(map(str, files))


# -- one overwrite rule (issue #27, item 19) ---------------------------------------------------


def test_check_overwritable_is_the_one_rule(tmp_path):
    from fakespotter.errors import UserError
    from fakespotter.results import check_overwritable

    path = tmp_path / "out.bin"
    check_overwritable(path)  # nothing there: fine
    path.write_bytes(b"")
    check_overwritable(path)  # an empty file holds nothing to lose
    path.write_bytes(b"old output")
    with pytest.raises(UserError, match=r"exists; pass --overwrite to replace it$"):
        check_overwritable(path)
    with pytest.raises(UserError, match="--overwrite to replace it or --resume to continue it"):
        check_overwritable(path, resumable=True)
    with pytest.raises(UserError, match="--force to replace"):
        check_overwritable(path, option="--force")
    check_overwritable(path, overwrite=True)
    with pytest.raises(UserError, match="not a fakespotter output; will not overwrite it"):
        check_overwritable(path, overwrite=True, ours=lambda p: False)
    check_overwritable(path, overwrite=True, ours=lambda p: True)
    folder = tmp_path / "folder"
    folder.mkdir()
    check_overwritable(folder)  # an empty folder holds nothing to lose
    (folder / "report.html").write_text("old")
    with pytest.raises(UserError, match="folder exists; pass --overwrite"):
        check_overwritable(folder)
    assert path.read_bytes() == b"old output"


def test_detect_output_is_replaced_only_with_overwrite(tmp_path, trained):
    write_faces(tmp_path / "photos", 2, smooth=False, seed=5)
    out = tmp_path / "rows.csv"
    args = ["detect", str(tmp_path / "photos"), "--model", str(trained), "--aligned",
            "--output", str(out)]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(main, args).exit_code == 0
    out.write_bytes(out.read_bytes() + b"# a note of mine\n")
    before = out.read_bytes()
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and out.read_bytes() == before
    assert "pass --overwrite to replace it or --resume to continue it" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    replaced = runner.invoke(main, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert len(read_csv(out)) == 2 and b"a note of mine" not in out.read_bytes()
    both = runner.invoke(main, [*args, "--overwrite", "--resume"])
    assert both.exit_code == 2 and "contradict" in both.output
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n")
    refused = runner.invoke(main, [*args[:-1], str(notes), "--overwrite"])
    assert refused.exit_code == 1 and "will not overwrite" in refused.stderr
    assert notes.read_text() == "my,own\n"


# -- wording (issue #27, item 23) ------------------------------------------------------------


def test_closing_summary_counts_in_good_english(tmp_path, trained):
    assert [plural(n, "face") for n in (0, 1, 2)] == ["0 faces", "1 face", "2 faces"]
    assert plural(1, "photo", "photos") == "1 photo" and plural(3, "is", "are") == "3 are"
    write_faces(tmp_path / "photos", 1, smooth=False, seed=5)
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(
        main, ["detect", str(tmp_path / "photos"), "--model", str(trained), "--aligned",
               "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "1 face: " in result.stderr and "1 input without a result" in result.stderr
    assert f"wrote 2 rows to {out}" in result.stderr

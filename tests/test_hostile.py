"""Hostile inputs: odd and malicious image files, crafted model files, interrupted scans, fuzzing.

The image corpus is written by tests/hostile.py into a temporary folder (no binaries in git).
End-to-end tests need the cached dlib weights (skipped otherwise); the rest run anywhere.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from fakespotter import scan
from fakespotter.cli import EXIT_INPUTS_FAILED, main
from fakespotter.detector import FakeSpotter, load_model, save_model
from fakespotter.faces import ImageError, load_image
from fakespotter.modelfile import ModelFileError
from fakespotter.results import RowWriter, resume
from fakespotter.rows import Row
from fakespotter.scan import Faces, find_faces, iter_files, score_rows
from hostile import EITHER, MAX_BYTES_IN_TESTS, OK, encoded, face_like, restore_permissions, \
    write_corpus
from test_detector import tiny_backbone, toy_faces

from fakespotter.rows import FIELDS  # noqa: E402


def write_faces(folder: Path, n: int, smooth: bool, seed: int) -> list[Path]:
    """Noise 'faces' (as in test_cli): the 'fake' ones are blurred."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = face_like(96, seed * 1000 + i)
        if smooth:
            im = im.resize((24, 24)).resize((96, 96), Image.Resampling.BICUBIC)
        paths.append(folder / f"{i:03d}.png")
        im.save(paths[-1])
    return paths


@pytest.fixture
def trained(tiny_model) -> Path:
    return tiny_model


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return list(csv.DictReader(f))


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


# -- the whole corpus through the command line ---------------------------------------------

def test_hostile_corpus_through_cli(tmp_path, trained, monkeypatch):
    corpus = tmp_path / "corpus"
    cases = write_corpus(corpus)
    # a folder that vanishes after it was listed and before its file is read
    vanished = write_faces(corpus / "vanishing", 1, smooth=False, seed=9)[0]
    listed = scan.iter_files

    def list_then_vanish(paths):
        files = list(listed(paths))
        shutil.rmtree(corpus / "vanishing", ignore_errors=True)
        return iter(files)

    try:
        inputs = [str(p) for p in listed([corpus])]
        assert len(inputs) == len(cases) + 1  # every case is an input file; plus the vanishing one
        runner = CliRunner()
        limits = ["--max-bytes", str(MAX_BYTES_IN_TESTS)]

        monkeypatch.setattr(scan, "iter_files", list_then_vanish)
        result = runner.invoke(main, ["detect", str(corpus), "--model", str(trained), "--aligned",
                                      "--format", "json", *limits])
        assert result.exit_code == EXIT_INPUTS_FAILED, result.output  # the corpus has bad files
        no_traceback(result)
        rows = json.loads(result.stdout)
        assert [r["path"] for r in rows] == inputs  # exactly one row per input, in order
        by_path = {r["path"]: r for r in rows}
        assert by_path[str(vanished)]["error"] == "file not found"
        for case in cases:
            row = by_path[str(case.path)]
            if case.expect == OK:
                assert row["error"] is None and 0 <= row["p_fake"] <= 1, (case.name, row)
            elif case.expect != EITHER:
                assert row["p_fake"] is None and case.expect in row["error"], (case.name, row)
                assert "\n" not in row["error"]

        # csv keeps odd names exact: the non-UTF-8 name byte for byte, the newline quoted
        write_faces(corpus / "vanishing", 1, smooth=False, seed=9)
        out = tmp_path / "rows.csv"
        result = runner.invoke(main, ["detect", str(corpus), "--model", str(trained), "--aligned",
                                      "--format", "csv", "--output", str(out), *limits])
        no_traceback(result)
        table = read_csv(out)
        assert [r["path"] for r in table] == inputs
        assert os.fsencode(table[inputs.index(str(cases[-1].path))]["path"]).endswith(b"caf\xe9_latin1.png")
        result = runner.invoke(main, ["detect", str(corpus), "--model", str(trained), "--aligned",
                                      *limits])  # the table on standard output
        no_traceback(result)
        assert result.exit_code == EXIT_INPUTS_FAILED
        assert len(result.stdout_bytes.splitlines()) >= len(inputs) + 1

        # evaluate and train: the readable files count, each unreadable one is one line
        monkeypatch.setattr(scan, "iter_files", listed)
        write_faces(corpus / "vanishing", 1, smooth=False, seed=9)
        n_bad = sum(1 for r in table if r["error"] and r["path"] != str(vanished))
        fake = trained.parent / "fake"  # the tiny model's own fake faces
        result = runner.invoke(main, ["evaluate", "--real", str(corpus), "--fake", str(fake),
                                      "--model", str(trained), "--aligned", "--format", "json"])
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert result.stdout.count("skipped ") == 0  # the report goes to stderr, stdout is JSON
        metrics = json.loads(result.stdout)
        assert metrics["n_unreadable"] == n_bad and metrics["n_real"] == len(inputs) - n_bad
        assert result.stderr.count("skipped ") == n_bad
        result = runner.invoke(main, ["train", "--real", str(corpus), "--fake", str(fake),
                                      "--backbone", "dlib", "--variant", "layer", "--aligned",
                                      "--output", str(tmp_path / "m.safetensors")])
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert result.stderr.count("skipped ") == n_bad
    finally:
        restore_permissions(cases)


def test_every_corpus_file_loads_or_gives_its_reason(tmp_path):
    cases = write_corpus(tmp_path / "corpus")
    try:
        for case in cases:
            try:
                image = load_image(case.path, max_bytes=MAX_BYTES_IN_TESTS)
            except ImageError as e:
                assert case.expect not in (OK,) and (case.expect == EITHER or case.expect in str(e)), \
                    (case.name, str(e))
            else:
                assert case.expect in (OK, EITHER), case.name
                assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        by_name = {c.name: c for c in cases}
        assert load_image(by_name["exif_rotated.jpg"].path).shape == (80, 40, 3)  # upright
        assert load_image(by_name["animated.gif"].path)[0, 0].tolist() == [255, 0, 0]
    finally:
        restore_permissions(cases)


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
    assert [f.error for f in found] == [scan.NO_FACE, "face detection failed (degenerate landmarks)",
                                        scan.NO_FACE]


# -- resuming ------------------------------------------------------------------------------

_SLOW_DETECT = """
import sys, time
import fakespotter.scan as scan
load = scan.load_image
def slow_load(*args, **kwargs):
    time.sleep(0.03)  # make the scan last long enough to be killed half-way
    return load(*args, **kwargs)
scan.load_image = slow_load
from fakespotter.cli import EXIT_INPUTS_FAILED, main
main(sys.argv[1:], prog_name="fakespotter")
"""


def test_resume_after_sigkill(tmp_path, trained):
    files = write_faces(tmp_path / "photos", 40, smooth=False, seed=7)
    out = tmp_path / "rows.csv"
    args = ["detect", str(tmp_path / "photos"), "--model", str(trained), "--aligned",
            "--format", "csv", "--output", str(out), "--batch-size", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_DETECT, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "wb"))
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
    args = ["detect", str(tmp_path / "photos"), "--model", str(trained), "--aligned",
            "--format", fmt]
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
            assert sorted(r["path"] for r in read_csv(part)) == \
                sorted(r["path"] for r in read_csv(full))
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
    result = CliRunner().invoke(main, ["detect", str(tmp_path), "--format", "json", "--resume",
                                       "--output", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "--resume needs" in result.output


def test_writer_keeps_non_utf8_paths_exact():
    name = os.fsdecode(b"/photos/caf\xe9\n.png")
    rows = [Row(path=name, error="not an image"), Row(path="/p/b.png", face=0, box=[0.0, 1.0],
                                                      p_fake=0.25, label="real")]
    for fmt in ("csv", "jsonl", "json", "table"):
        buf = io.BytesIO()
        writer = RowWriter(buf, fmt)
        writer.write(rows[:1])
        writer.write(rows[1:])
        writer.close()
        data = buf.getvalue()
        if fmt == "csv":
            back = list(csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"),
                                               newline="")))
            assert back[0] == FIELDS and os.fsencode(back[1][0]) == b"/photos/caf\xe9\n.png"
        elif fmt == "jsonl":
            back = [json.loads(line) for line in data.decode("ascii").splitlines()]
            assert os.fsencode(back[0]["path"]) == b"/photos/caf\xe9\n.png"
        elif fmt == "json":
            back = json.loads(data.decode("ascii"))
            assert back[1]["p_fake"] == 0.25 and os.fsencode(back[0]["path"]).endswith(b"\xe9\n.png")
        else:
            assert b"caf\xe9\n.png  (not an image)" in data


def test_score_rows_keeps_a_files_faces_together():
    class Half:
        def predict_proba(self, X):
            return np.full((len(X), 2), 0.5)

    face = scan.FaceCrop((0, 0, 1, 1), None, np.zeros((5, 2)), np.zeros((4, 4, 3), np.uint8))
    found = [Faces(Path(f"{i}.png"), [face] * 3) for i in range(4)]
    rows = list(score_rows(Half(), found, batch_size=2))
    assert [r.path for r in rows] == [p for i in range(4) for p in [f"{i}.png"] * 3]
    assert [r.face for r in rows] == [0, 1, 2] * 4


# -- model files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    X, y = toy_faces(40)
    det = FakeSpotter(backbone=tiny_backbone(), variant="channel", cv=3).fit(X, y)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        save_model(det, path)
        return path.read_bytes()


def _craft(data: bytes, header_edit=None, meta_edit=None, raw_header: bytes | None = None) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["fakespotter"])
    if meta_edit:
        meta_edit(meta)
    header["__metadata__"]["fakespotter"] = json.dumps(meta)
    if header_edit:
        header_edit(header)
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def _huge(h, n=10_000_000):
    """Every feature array claims n float64 values at consistent offsets (80 MB each)."""
    for i, name in enumerate(["coef", "scaler_mean", "scaler_scale"]):
        h[name].update(dtype="F64", shape=[n], data_offsets=[i * 8 * n, (i + 1) * 8 * n])


@pytest.mark.parametrize("edit", [
    dict(meta_edit=lambda m: m.update(n_features=10_000_000)),  # every array 80 MB, none there
    dict(meta_edit=lambda m: m.update(n_features=10_000_000), header_edit=_huge),
    dict(meta_edit=lambda m: m.update(taps=["t"] * 99_999)),
    dict(header_edit=lambda h: h["coef"].update(shape=[2**40, 2**40])),
    dict(header_edit=lambda h: h["coef"].update(shape=5)),
    dict(header_edit=lambda h: h["coef"].update(shape=None)),
    dict(header_edit=lambda h: h["coef"].update(dtype=["F64"])),
    dict(header_edit=lambda h: h["coef"].update(data_offsets=[0, 2**62])),
    dict(meta_edit=lambda m: m.update(C=10**400)),
    dict(meta_edit=lambda m: m.update(calibration=[10**400, 1.0])),
    dict(raw_header=b"[" * 100_000 + b"]" * 100_000),
    dict(header_edit=lambda h: h["__metadata__"].update(fakespotter="[" * 100_000 + "]" * 100_000)),
], ids=["n_features", "n_features+shapes", "taps", "shape2d", "shape_int", "shape_none",
        "dtype_list", "offsets", "huge_C", "huge_calibration", "nested_header", "nested_meta"])
def test_crafted_shapes_refused_before_allocation(model_bytes, tmp_path, edit):
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(_craft(model_bytes, **edit))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as info:
            load_model(path, backbone=tiny_backbone())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak  # the file is small; so must be what loading it allocates
    assert "\n" not in str(info.value)


class _WritesMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # runs open(marker, "w") when unpickled


def test_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_WritesMarker(str(marker)))
    pickle.loads(payload).close()  # prove the payload is live...
    assert marker.exists()
    marker.unlink()  # ...then offer it to the loader in every wrapping
    import torch

    wrapped = tmp_path / "torch.pt"
    torch.save({"model": _WritesMarker(str(marker))}, wrapped)
    for name, data in {"raw.safetensors": payload, "model.pkl": payload,
                       "torch.safetensors": wrapped.read_bytes(),
                       "header.safetensors": struct.pack("<Q", len(payload)) + payload}.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelFileError):
            load_model(path, backbone=tiny_backbone())
        result = CliRunner().invoke(main, ["detect", str(tmp_path), "--model", str(path)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert not marker.exists(), name


# -- fuzzing (bounded: a few seconds each) -------------------------------------------------

_PNG = encoded(face_like(24, 1), "PNG")
_JPEG = encoded(face_like(24, 2), "JPEG")
_GIF = encoded(face_like(24, 3), "GIF")


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut else buf)


_edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12)
_fuzz = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _load_or_refuse(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(data)
        f.flush()
        try:
            image = load_image(f.name, max_pixels=4_000_000)
        except ImageError as e:
            assert e.reason and "\n" not in e.reason
            return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 0 and image.shape[1] > 0


@_fuzz
@given(st.binary(max_size=2048))
def test_fuzz_load_image_random_bytes(data):
    _load_or_refuse(data)


@_fuzz
@given(st.sampled_from([_PNG, _JPEG, _GIF]), _edits, st.one_of(st.none(), st.integers(1, 4000)))
def test_fuzz_load_image_mutated(data, edits, cut):
    _load_or_refuse(_mutate(data, edits, cut))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edits=_edits, cut=st.one_of(st.none(), st.integers(1, 6000)))
def test_fuzz_model_file(model_bytes, edits, cut):
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(_mutate(model_bytes, edits, cut))
        f.flush()
        try:
            det = load_model(f.name, backbone=tiny_backbone())
        except ModelFileError as e:
            assert "\n" not in str(e)
        else:
            assert len(det.coef_) == len(det.scaler_mean_)


_WORDS = ["detect", "train", "evaluate", "weights", "list", "--model", "--format", "json", "csv",
          "jsonl", "table", "--output", "--resume", "--aligned", "--max-pixels", "--max-bytes",
          "--batch-size", "--real", "--fake", "--backbone", "dlib", "--variant", "layer", "-h",
          "--version", "0", "-1", "99999999999999999999", "", "--", "\udcff", "/nonexistent.jpg",
          "GARBAGE"]


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=8)), max_size=8))
def test_fuzz_cli_arguments(tmp_path, monkeypatch, args):
    import fakespotter.detector

    def no_shipped_model():
        raise FileNotFoundError("this fakespotter has no shipped model; pass --model FILE")

    # keep each example fast: no network, no big network loads from a shipped default model
    monkeypatch.setattr(fakespotter.detector, "default_model_path", no_shipped_model)
    if "fetch" in args:
        return
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model")
    args = [str(garbage) if a == "GARBAGE" else a for a in args]
    with tempfile.TemporaryDirectory() as cwd:
        old = os.getcwd()
        os.chdir(cwd)  # any file the arguments name is created in a scratch folder
        try:
            # a real folder ("/", "..") could start a scan of the whole disk
            assume(not any(a and os.path.isdir(a) for a in args))
            result = CliRunner().invoke(main, args)
        finally:
            os.chdir(old)
    assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
    no_traceback(result)


def test_detect_help_states_the_library_limits():
    from fakespotter.faces.io import MAX_BYTES, MAX_PIXELS

    result = CliRunner().invoke(main, ["detect", "--help"])
    assert f"[default: {MAX_PIXELS}]" in result.output
    assert f"[default: {MAX_BYTES}]" in result.output

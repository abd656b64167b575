"""Hostile inputs: odd and malicious image files through image loading and the command line,
and fuzzing of both.

The image corpus is written by tests/hostile.py into a temporary folder (no binaries in git).
End-to-end tests need the cached dlib weights (skipped otherwise); the rest run anywhere.
Crafted model files are in test_modelfile.py, interrupted scans in test_results.py, and the
scan's own failure rows in test_scan.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import byte_edits, mutate, read_csv, write_faces
from hostile import (
    EITHER,
    MAX_BYTES_IN_TESTS,
    OK,
    encoded,
    face_like,
    restore_permissions,
    write_corpus,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fakespotter import photos
from fakespotter.cli import EXIT_INPUTS_FAILED, main
from fakespotter.faces import ImageError, load_image

# flat images (one colour): --aligned finds no face in them (issue #27, 23)
FLAT = {"one_pixel.png", "strip_1x500.png", "exif_rotated.jpg", "animated.gif", "animated.webp"}


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


# -- the whole corpus through the command line ---------------------------------------------


@pytest.mark.slow
def test_hostile_corpus_through_cli(tmp_path, trained, monkeypatch):
    corpus = tmp_path / "corpus"
    cases = write_corpus(corpus)
    # a folder that vanishes after it was listed and before its file is read
    vanished = write_faces(corpus / "vanishing", 1, smooth=False, seed=9)[0]
    listed = photos.iter_files

    def list_then_vanish(paths):
        files = list(listed(paths))
        shutil.rmtree(corpus / "vanishing", ignore_errors=True)
        return iter(files)

    try:
        inputs = [str(p) for p in listed([corpus])]
        assert len(inputs) == len(cases) + 1  # every case is an input file; plus the vanishing one
        runner = CliRunner()
        limits = ["--max-bytes", str(MAX_BYTES_IN_TESTS)]

        monkeypatch.setattr(photos, "iter_files", list_then_vanish)
        result = runner.invoke(
            main,
            [
                "detect",
                str(corpus),
                "--model",
                str(trained),
                "--aligned",
                "--format",
                "json",
                *limits,
            ],
        )
        assert result.exit_code == EXIT_INPUTS_FAILED, result.output  # the corpus has bad files
        no_traceback(result)
        rows = json.loads(result.stdout)
        assert [r["path"] for r in rows] == inputs  # exactly one row per input, in order
        by_path = {r["path"]: r for r in rows}
        assert by_path[str(vanished)]["error"] == "file not found"
        for case in cases:
            row = by_path[str(case.path)]
            if case.name in FLAT:
                assert row["p_fake"] is None and row["error"] == "no face found", (case.name, row)
            elif case.expect == OK:
                assert row["error"] is None and 0 <= row["p_fake"] <= 1, (case.name, row)
            elif case.expect != EITHER:
                assert row["p_fake"] is None and case.expect in row["error"], (case.name, row)
                assert "\n" not in row["error"]

        # csv keeps odd names exact: the non-UTF-8 name byte for byte, the newline quoted
        write_faces(corpus / "vanishing", 1, smooth=False, seed=9)
        out = tmp_path / "rows.csv"
        result = runner.invoke(
            main,
            [
                "detect",
                str(corpus),
                "--model",
                str(trained),
                "--aligned",
                "--format",
                "csv",
                "--output",
                str(out),
                *limits,
            ],
        )
        no_traceback(result)
        table = read_csv(out)
        assert [r["path"] for r in table] == inputs
        assert os.fsencode(table[inputs.index(str(cases[-1].path))]["path"]).endswith(
            b"caf\xe9_latin1.png"
        )
        result = runner.invoke(
            main, ["detect", str(corpus), "--model", str(trained), "--aligned", *limits]
        )  # the table on standard output
        no_traceback(result)
        assert result.exit_code == EXIT_INPUTS_FAILED
        assert len(result.stdout_bytes.splitlines()) >= len(inputs) + 1

        # evaluate and train: the readable files count, each unreadable one is one line
        monkeypatch.setattr(photos, "iter_files", listed)
        write_faces(corpus / "vanishing", 1, smooth=False, seed=9)
        n_bad = sum(
            1
            for r in table
            if r["error"] and r["error"] != "no face found" and r["path"] != str(vanished)
        )
        fake = trained.parent / "fake"  # the tiny model's own fake faces
        result = runner.invoke(
            main,
            [
                "evaluate",
                "--real",
                str(corpus),
                "--fake",
                str(fake),
                "--model",
                str(trained),
                "--aligned",
                "--format",
                "json",
            ],
        )
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert result.stdout.count("skipped ") == 0  # the report goes to stderr, stdout is JSON
        metrics = json.loads(result.stdout)
        assert metrics["n_unreadable"] == n_bad and metrics["n_real"] == len(inputs) - n_bad
        assert result.stderr.count("skipped ") == n_bad
        result = runner.invoke(
            main,
            [
                "train",
                "--real",
                str(corpus),
                "--fake",
                str(fake),
                "--backbone",
                "dlib",
                "--variant",
                "layer",
                "--aligned",
                "--output",
                str(tmp_path / "m.safetensors"),
            ],
        )
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert result.stderr.count("skipped ") == n_bad + len(FLAT)  # train names no-face ones
    finally:
        restore_permissions(cases)


def test_every_corpus_file_loads_or_gives_its_reason(tmp_path):
    cases = write_corpus(tmp_path / "corpus")
    try:
        for case in cases:
            try:
                image = load_image(case.path, max_bytes=MAX_BYTES_IN_TESTS)
            except ImageError as e:
                assert case.expect not in (OK,) and (
                    case.expect == EITHER or case.expect in str(e)
                ), (case.name, str(e))
            else:
                assert case.expect in (OK, EITHER), case.name
                assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        by_name = {c.name: c for c in cases}
        assert load_image(by_name["exif_rotated.jpg"].path).shape == (80, 40, 3)  # upright
        assert load_image(by_name["animated.gif"].path)[0, 0].tolist() == [255, 0, 0]
    finally:
        restore_permissions(cases)


# -- fuzzing (bounded: a few seconds each) -------------------------------------------------

_PNG = encoded(face_like(24, 1), "PNG")
_JPEG = encoded(face_like(24, 2), "JPEG")
_GIF = encoded(face_like(24, 3), "GIF")
_edits = byte_edits()
_fuzz = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


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
    _load_or_refuse(mutate(data, edits, cut))


_WORDS = [
    "detect",
    "train",
    "evaluate",
    "weights",
    "list",
    "--model",
    "--format",
    "json",
    "csv",
    "jsonl",
    "table",
    "--output",
    "--resume",
    "--aligned",
    "--max-pixels",
    "--max-bytes",
    "--batch-size",
    "--real",
    "--fake",
    "--backbone",
    "dlib",
    "--variant",
    "layer",
    "-h",
    "--version",
    "0",
    "-1",
    "99999999999999999999",
    "",
    "--",
    "\udcff",
    "/nonexistent.jpg",
    "GARBAGE",
]


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=8)), max_size=8))
def test_fuzz_cli_arguments(tmp_path, monkeypatch, args):
    import fakespotter.persistence

    def no_shipped_model():
        raise FileNotFoundError("this fakespotter has no shipped model; pass --model FILE")

    # keep each example fast: no network, no big network loads from a shipped default model
    monkeypatch.setattr(fakespotter.persistence, "default_model_path", no_shipped_model)
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

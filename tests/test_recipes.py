"""ARCHITECTURE.md's recipes, each followed in a test as a plug-in author would: an output
format and a scan engine (the backbone and the criterion recipes: test_toy_backbone.py and
test_toy_criterion.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import write_noise_faces

from fakespotter.cli import main
from fakespotter.rows import Row


def tsv_line(row: Row, index: int) -> str:
    return f"{row.path}\t{row.face}\t{row.p_fake}\t{row.label}\n"


def test_an_output_format_added_to_writers_is_a_format_choice(tiny_model, tmp_path, monkeypatch):
    from fakespotter import results

    fmt = results.OutputFormat("path\tface\tp_fake\tlabel\n", tsv_line, lambda n: f"# {n} rows\n")
    monkeypatch.setitem(results.WRITERS, "tsv", fmt)
    monkeypatch.setitem(results.SUFFIX_FORMATS, ".tsv", "tsv")
    faces = write_noise_faces(tmp_path / "faces", 3, smooth=False, seed=31)
    assert "tsv" in CliRunner().invoke(main, ["detect", "--help"]).output
    out = tmp_path / "rows.tsv"  # the format from the suffix, as for .csv
    args = ["detect", str(faces), "--aligned", "--model", str(tiny_model), "--output", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 4), result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "path\tface\tp_fake\tlabel" and lines[-1] == "# 3 rows"
    want = CliRunner().invoke(main, [*args[:-2], "--format", "json"])
    rows = json.loads(want.stdout)
    assert [line.split("\t") for line in lines[1:-1]] == [
        [r["path"], str(r["face"]), str(r["p_fake"]), r["label"]] for r in rows
    ]


@pytest.mark.slow
def test_a_registered_scan_engine_gives_the_local_engines_rows(tiny_model, tmp_path):
    """A serial engine in a dozen lines: one Scanner, scan_batch per batch, each table to the
    driver whole. Resume and the part files come from the store, unchanged."""
    pq = pytest.importorskip("pyarrow.parquet")
    from fakespotter import collection
    from fakespotter.collection.scanner import Scanner
    from fakespotter.collection.table import scan_batch

    batches_seen = []

    def run_serial(job, on_table):
        scanner = Scanner(**job.scanner_options)
        for start in range(0, len(job.todo), job.batch_size):
            batch = job.todo[start : start + job.batch_size]
            batches_seen.append(len(batch))
            on_table(scan_batch(scanner, batch))

    collection.register_engine("serial", collection.Engine(run_serial))
    try:
        photos = write_noise_faces(tmp_path / "photos", 5, smooth=True, seed=32)
        options = {"model": tiny_model, "aligned": True, "batch_size": 2}
        serial = collection.scan([str(photos)], tmp_path / "serial", engine="serial", **options)
        local = collection.scan([str(photos)], tmp_path / "local", **options)
        cli = CliRunner().invoke(main, ["scan", "--help"])
        assert "serial" in cli.output
    finally:
        collection.ENGINES.pop("serial")
    assert batches_seen == [2, 2, 1] and serial["files"] == local["files"] == 5

    def rows(folder):
        table = pq.read_table(folder).to_pylist()
        return sorted((r["path"], r["face"], r["p_fake"], r["label"]) for r in table)

    assert rows(tmp_path / "serial") == rows(tmp_path / "local")

"""`fakespotter scan` with the local engine: the same rows as `detect`, Parquet part files,
sources (folders, lists, URLs), and an output folder that never loses or duplicates a row."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pa = pytest.importorskip("pyarrow", reason="fakespotter scan needs pyarrow (the [ray] extra)")
pq = pytest.importorskip("pyarrow.parquet")

from fakespotter.cli import main  # noqa: E402
from fakespotter.collection import scan  # noqa: E402
from fakespotter.collection.sources import list_sources  # noqa: E402
from fakespotter.collection.store import MANIFEST, read_scan  # noqa: E402
from fakespotter.errors import UserError  # noqa: E402

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"
NON_UTF8 = os.fsdecode(b"caf\xe9-face.jpg")  # Latin-1 bytes: not a UTF-8 name


def write_mixed_folder(folder: Path) -> Path:
    """Faces (one, and two in one photo), no face, truncated, not an image, a non-UTF-8 name."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    data = ASTRONAUT.read_bytes()
    (folder / "astronaut.jpg").write_bytes(data)
    im = Image.open(ASTRONAUT).convert("RGB")
    pair = Image.new("RGB", (im.width * 2, im.height))
    pair.paste(im, (0, 0))
    pair.paste(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (im.width, 0))
    pair.save(folder / "two-faces.jpg", quality=95)
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(folder / "no-face.png")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("not an image")
    (folder / os.fsencode(NON_UTF8).decode("utf-8", "surrogateescape")).write_bytes(data)
    del rng
    return folder


@pytest.fixture
def shipped_weights(weight_file):
    for name in ("sface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)


def detect_rows(paths) -> dict:
    """(path, face) -> row of `fakespotter detect --format jsonl`."""
    result = CliRunner().invoke(main, ["detect", "--format", "jsonl", *map(str, paths)])
    assert result.exit_code in (0, 3), result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {(r["path"], r["face"]): r for r in rows}


def scan_rows(folder: Path) -> dict:
    table = read_scan(folder).to_pylist()
    keys = [
        (
            r["path"]
            if r["path_bytes"] is None
            else r["path_bytes"].decode("utf-8", "surrogateescape"),
            r["face"],
        )
        for r in table
    ]
    assert len(keys) == len(set(keys)), "a (path, face) is in the output twice"
    return dict(zip(keys, table, strict=True))


def assert_same_rows(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, w in want.items():
        g = key and got[key]
        assert g["label"] == w["label"] and g["error"] == w["error"], key
        assert g["warning"] == w["warning"], key
        if w["p_fake"] is None:
            assert g["p_fake"] is None
        else:
            assert abs(g["p_fake"] - w["p_fake"]) <= 1e-6, key
            np.testing.assert_allclose(g["box"], w["box"], atol=1e-6)


@pytest.mark.slow
def test_local_scan_gives_detects_rows_once_each(tmp_path, shipped_weights):
    folder = write_mixed_folder(tmp_path / "photos")
    files = sorted(folder.iterdir())
    want = detect_rows(files)
    summary = scan([str(folder)], tmp_path / "out", batch_size=2, part_size=2)
    got = scan_rows(tmp_path / "out")
    assert_same_rows(got, want)
    assert summary["files"] == 6 and summary["faces"] == 4 and summary["errors"] == 3
    # the non-UTF-8 name: readable text in `path`, the exact bytes in `path_bytes`
    odd = [r for r in got.values() if r["path_bytes"] is not None]
    assert len(odd) == 1 and odd[0]["path_bytes"].endswith(b"caf\xe9-face.jpg")
    assert "\ufffd" in odd[0]["path"]
    assert {r["n_faces"] for k, r in got.items() if k[0].endswith("two-faces.jpg")} == {2}
    # parts of at most two photos each, every one with the scan's metadata
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert len(parts) == 3
    meta = json.loads(pq.read_schema(parts[0]).metadata[b"fakespotter"])
    assert meta["backbone"] == "sface" and len(meta["model_sha256"]) == 64
    assert json.loads((tmp_path / "out" / MANIFEST).read_text()) == meta
    # readers see one table
    assert pq.read_table(tmp_path / "out").num_rows == len(want)


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(tmp_path, shipped_weights):
    folder = write_mixed_folder(tmp_path / "photos")
    scan([str(folder)], tmp_path / "one", batch_size=2, workers=1)
    scan([str(folder)], tmp_path / "two", batch_size=2, workers=2)
    assert_same_rows(scan_rows(tmp_path / "two"), scan_rows(tmp_path / "one"))


@pytest.mark.slow
def test_resume_scans_only_what_is_missing_and_drops_half_written_parts(tmp_path, shipped_weights):
    folder = write_mixed_folder(tmp_path / "photos")
    out = tmp_path / "out"
    scan([str(folder)], out, batch_size=1, part_size=1)
    full = scan_rows(out)
    parts = sorted(out.glob("part-*.parquet"))
    parts[0].unlink()  # as if the scan had stopped before this part
    parts[1].rename(out / f".{parts[1].name}")  # a half-written part (hidden temp name)
    (out / f".{parts[1].name}").write_bytes(b"PAR1 cut short")
    with pytest.raises(UserError, match="--resume"):
        scan([str(folder)], out)
    summary = scan([str(folder)], out, resume=True, batch_size=1)
    assert summary["already_done"] == 4 and summary["files"] == 6
    assert not list(out.glob(".part-*"))
    assert_same_rows(scan_rows(out), full)
    # nothing left to do
    assert scan([str(folder)], out, resume=True)["already_done"] == 6


def test_output_folder_that_is_not_a_scan_is_never_touched(tmp_path, tiny_model):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"precious")
    for flags in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(UserError, match="not a fakespotter scan"):
            scan([str(tmp_path)], folder, model=tiny_model, aligned=True, **flags)
    assert [p.name for p in folder.iterdir()] == ["thesis.docx"]
    assert (folder / "thesis.docx").read_bytes() == b"precious"


def test_resume_with_another_model_is_refused(tmp_path, tiny_model):
    from conftest import write_noise_faces

    photos = write_noise_faces(tmp_path / "photos", 3, smooth=False, seed=3)
    out = tmp_path / "out"
    scan([str(photos)], out, model=tiny_model, aligned=True)
    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_model.read_bytes() + b" ")  # another file: another sha256
    before = sorted(p.read_bytes() for p in out.iterdir())
    with pytest.raises(UserError, match="another model"):
        scan([str(photos)], out, model=other, aligned=True, resume=True)
    assert sorted(p.read_bytes() for p in out.iterdir()) == before
    # --overwrite starts again, keeping nothing of the old scan's parts
    scan([str(photos)], out, model=tiny_model, aligned=True, overwrite=True)
    assert read_scan(out).num_rows == 3


def test_sources_lists_urls_and_folders(tmp_path):
    from conftest import write_noise_faces

    photos = write_noise_faces(tmp_path / "photos", 3, smooth=False, seed=3)
    (photos / "clip.mp4").write_bytes(b"")  # videos are for `detect`
    names = [str(photos / f"{i:03d}.png") for i in range(3)]
    listed = tmp_path / "list.txt"
    listed.write_text(f"# my photos\n{names[2]}\n\n{names[0]}\n")
    table = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [names[1], names[1]]}), table)
    got = list_sources([str(listed), str(table), str(photos), f"file://{photos}/001.png"])
    assert got == [names[2], names[0], names[1], f"file://{photos}/001.png"]
    assert list_sources([f"file://{photos}"]) == [f"file://{photos}/{i:03d}.png" for i in range(3)]
    with pytest.raises(UserError, match="path"):
        pq.write_table(pa.table({"file": ["x"]}), tmp_path / "bad.parquet")
        list_sources([str(tmp_path / "bad.parquet")])


def test_url_photo_is_scanned_like_its_file(tmp_path, tiny_model):
    from conftest import write_noise_faces

    photos = write_noise_faces(tmp_path / "photos", 2, smooth=True, seed=4)
    scan([str(photos)], tmp_path / "a", model=tiny_model, aligned=True)
    scan([f"file://{photos}"], tmp_path / "b", model=tiny_model, aligned=True)
    a = sorted(read_scan(tmp_path / "a").column("p_fake").to_pylist())
    b = read_scan(tmp_path / "b").to_pylist()
    assert [r["path"] for r in b] == [f"file://{photos}/{i:03d}.png" for i in range(2)]
    np.testing.assert_allclose(sorted(r["p_fake"] for r in b), a, atol=1e-9)


def test_scan_command_writes_parquet_and_says_what_it_did(tmp_path, tiny_model):
    from conftest import write_noise_faces

    photos = write_noise_faces(tmp_path / "photos", 3, smooth=False, seed=5)
    (photos / "broken.png").write_bytes(b"\x89PNG broken")
    args = ["scan", str(photos), "--output", str(tmp_path / "out"), "--model", str(tiny_model)]
    result = CliRunner().invoke(main, [*args, "--aligned"])
    assert result.exit_code == 3, result.output  # one photo without a score
    assert "4 photos scanned" in result.stderr and "1 without a score" in result.stderr
    again = CliRunner().invoke(main, [*args, "--aligned"])
    assert again.exit_code == 1 and "--resume" in again.stderr and "Traceback" not in again.output
    meta = json.loads(
        pq.read_schema(next((tmp_path / "out").glob("part-*"))).metadata[b"fakespotter"]
    )
    assert meta["command"].startswith("fakespotter scan ") and "--aligned" in meta["command"]
    both = CliRunner().invoke(main, [*args, "--resume", "--overwrite"])
    assert both.exit_code == 2


def test_read_url_image_limits_and_errors(tmp_path):
    from PIL import Image

    from fakespotter.collection.sources import read_url_image
    from fakespotter.faces import ImageError

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, format="PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    assert read_url_image(f"file://{tmp_path}/a.png").shape == (6, 8, 3)
    with pytest.raises(ImageError, match="too large"):
        read_url_image(f"file://{tmp_path}/a.png", max_bytes=10)
    with pytest.raises(ImageError, match="not found"):
        read_url_image(f"file://{tmp_path}/missing.png")


def test_package_level_scan_api(tmp_path, tiny_model):
    from conftest import write_noise_faces

    import fakespotter

    photos = write_noise_faces(tmp_path / "photos", 2, smooth=False, seed=6)
    summary = fakespotter.scan(str(photos), tmp_path / "out", model=tiny_model, aligned=True)
    assert summary["files"] == 2 and summary["faces"] == 2 and summary["errors"] == 0
    assert summary["output"] == str(tmp_path / "out")
    with pytest.raises(UserError, match="engine"):
        fakespotter.scan(str(photos), tmp_path / "x", model=tiny_model, engine="spark")


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path, tiny_model, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = CliRunner().invoke(
        main, ["scan", str(tmp_path), "--output", str(tmp_path / "out"), "--engine", "ray",
               "--model", str(tiny_model)],
    )  # fmt: skip
    assert result.exit_code == 1 and "pip install -e '.[ray]'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_worker_refuses_files_changed_on_the_way(monkeypatch):
    from fakespotter import __version__
    from fakespotter.weights import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, os.environ.get(CACHE_ENV, ""))  # restored after the test
    from fakespotter.collection.ray_engine import WorkerMismatch, unpack

    data = {"weights-ref": b"weights", "model-ref": b"model"}
    shipped = {
        "version": __version__,
        "model": {"sha256": "0" * 64, "data": "model-ref"},
        "weights": [{"name": "x", "filename": "x.bin", "sha256": "0" * 64, "data": "weights-ref"}],
    }
    with pytest.raises(WorkerMismatch, match="x.bin changed on its way"):
        unpack(shipped, get=data.__getitem__)
    with pytest.raises(WorkerMismatch, match="version"):
        unpack({**shipped, "version": "0.0-other"}, get=data.__getitem__)
    model_only = {**shipped, "weights": []}
    with pytest.raises(WorkerMismatch, match="model file changed"):
        unpack(model_only, get=data.__getitem__)


def test_ray_install_line_works_without_pypi():
    """fakespotter is not on PyPI: the install line is the clone's (or a built wheel's)."""
    from fakespotter.collection.ray_engine import RAY_INSTALL

    help_text = " ".join(CliRunner().invoke(main, ["scan", "--help"]).output.split())
    assert "pip install -e '.[ray]'" in help_text and "WHEEL[ray]" in help_text
    assert "pip install 'fakespotter[ray]'" not in help_text
    assert "pip install -e '.[ray]'" in RAY_INSTALL
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "pip install 'fakespotter[ray]'" not in readme and "pip install -e '.[ray]'" in readme


@pytest.mark.slow
def test_part_files_hold_part_size_photos_whatever_the_batch(tmp_path, tiny_model):
    from conftest import write_noise_faces

    photos = write_noise_faces(tmp_path / "photos", 7, smooth=False, seed=8)
    result = CliRunner().invoke(
        main, ["scan", str(photos), "--output", str(tmp_path / "out"), "--model",
               str(tiny_model), "--aligned", "--batch-size", "2", "--part-size", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [pq.read_table(p).num_rows for p in parts] == [3, 3, 1]  # one face a photo
    assert sorted(read_scan(tmp_path / "out").column("path").to_pylist()) == sorted(
        str(p) for p in photos.iterdir()
    )
    assert "3 part files" in result.stderr


def test_existing_scan_folder_refusal_is_the_one_overwrite_rule(tmp_path, tiny_model):
    from conftest import write_noise_faces

    photos = write_noise_faces(tmp_path / "photos", 1, smooth=False, seed=8)
    out = tmp_path / "out"
    scan([str(photos)], out, model=tiny_model, aligned=True)
    with pytest.raises(UserError, match="exists; pass --overwrite to replace it or --resume to"):
        scan([str(photos)], out, model=tiny_model, aligned=True)


def test_the_part_files_hold_every_field_of_a_row():
    """The Arrow schema is derived from rows.Row: a field added there is stored, unless it is
    left out on purpose (NOT_STORED, with the reason beside it)."""
    import dataclasses

    from fakespotter.collection.table import NOT_STORED, SCHEMA
    from fakespotter.rows import Row

    names = [f.name for f in dataclasses.fields(Row) if f.name not in NOT_STORED]
    assert names == [n for n in SCHEMA.names if n not in ("path_bytes", "n_faces")]

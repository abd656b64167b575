"""fakespotter.modelfile: the model file is written atomically, and a crafted, damaged or
malicious file is refused with a one-line reason before it can allocate or execute anything."""

from __future__ import annotations

import json
import pickle
import struct
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import byte_edits, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_detector import tiny_backbone, toy_faces

from fakespotter import modelfile
from fakespotter.cli import main
from fakespotter.detector import FakeSpotter
from fakespotter.modelfile import ModelFileError
from fakespotter.persistence import load_model, save_model

_edits = byte_edits()


# -- writing -------------------------------------------------------------------------------


def test_modelfile_writes_atomically(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    modelfile.save(path, {"a": "b"}, {"t": np.zeros(2)})
    assert path.exists() and not list(tmp_path.glob("*.partial"))
    first = path.read_bytes()

    # the second save dies half-way through writing its data; while it writes, a reader of
    # the model's name sees the whole first file, and after it the first file is untouched
    write = modelfile.save_file  # raising=True below: the test breaks if save stops using it
    seen_mid_write = []

    def dies_half_way(arrays, filename, metadata=None):
        write(arrays, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        seen_mid_write.append(path.read_bytes())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile, "save_file", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        modelfile.save(path, {"a": "c" * 1000}, {"t": np.ones(5000)})
    assert seen_mid_write == [first]
    assert path.read_bytes() == first
    assert modelfile.load(path, {"a": str}, lambda meta: {"t": (2,)})[0]["a"] == "b"

    # a save that succeeds replaces the whole file at once
    monkeypatch.setattr(modelfile, "save_file", write)
    modelfile.save(path, {"a": "c"}, {"t": np.ones(3)})
    meta, arrays = modelfile.load(path, {"a": str}, lambda meta: {"t": (3,)})
    assert meta["a"] == "c" and arrays["t"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_a_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    modelfile.save(path, {"a": "b"}, {"t": np.zeros(2)})

    def fails(arrays, filename, metadata=None):
        Path(filename).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile, "save_file", fails)
    with pytest.raises(OSError, match="No space left"):
        modelfile.save(path, {"a": "c"}, {"t": np.ones(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


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
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["fakespotter"])
    if meta_edit:
        meta_edit(meta)
    header["__metadata__"]["fakespotter"] = json.dumps(meta)
    if header_edit:
        header_edit(header)
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def _huge(h, n=10_000_000):
    """Every feature array claims n float64 values at consistent offsets (80 MB each)."""
    for i, name in enumerate(["coef", "scaler_mean", "scaler_scale"]):
        h[name].update(dtype="F64", shape=[n], data_offsets=[i * 8 * n, (i + 1) * 8 * n])


@pytest.mark.parametrize(
    "edit",
    [
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
        dict(
            header_edit=lambda h: h["__metadata__"].update(
                fakespotter="[" * 100_000 + "]" * 100_000
            )
        ),
    ],
    ids=[
        "n_features",
        "n_features+shapes",
        "taps",
        "shape2d",
        "shape_int",
        "shape_none",
        "dtype_list",
        "offsets",
        "huge_C",
        "huge_calibration",
        "nested_header",
        "nested_meta",
    ],
)
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


def test_face_detector_travels_with_the_model(model_bytes, tmp_path):
    """The face detector the training photos went through is part of the model: it is
    saved, read back, absent in older files (MTCNN, the only one they knew), and a name this
    fakespotter lacks is refused in one line instead of silently scoring with another."""
    path = tmp_path / "m.safetensors"
    path.write_bytes(model_bytes)
    det = load_model(path, backbone=tiny_backbone())
    assert det.face_detector == "mtcnn"
    save_model(det, tmp_path / "again.safetensors")
    saved = []
    _craft((tmp_path / "again.safetensors").read_bytes(), meta_edit=saved.append)
    assert saved[0]["face_detector"] == "mtcnn"

    older = tmp_path / "older.safetensors"
    older.write_bytes(_craft(model_bytes, meta_edit=lambda m: m.pop("face_detector")))
    assert load_model(older, backbone=tiny_backbone()).face_detector == "mtcnn"

    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(_craft(model_bytes, meta_edit=lambda m: m.update(face_detector="x" * 99)))
    with pytest.raises(ModelFileError, match="face detector") as info:
        load_model(foreign, backbone=tiny_backbone())
    assert "\n" not in str(info.value) and "x" * 41 not in str(info.value)
    wrong_type = tmp_path / "wrong_type.safetensors"
    wrong_type.write_bytes(_craft(model_bytes, meta_edit=lambda m: m.update(face_detector=[1])))
    with pytest.raises(ModelFileError):
        load_model(wrong_type, backbone=tiny_backbone())


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
    for name, data in {
        "raw.safetensors": payload,
        "model.pkl": payload,
        "torch.safetensors": wrapped.read_bytes(),
        "header.safetensors": struct.pack("<Q", len(payload)) + payload,
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelFileError):
            load_model(path, backbone=tiny_backbone())
        result = CliRunner().invoke(main, ["detect", str(tmp_path), "--model", str(path)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert not marker.exists(), name


# -- fuzzing (bounded: a few seconds) -------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(edits=_edits, cut=st.one_of(st.none(), st.integers(1, 6000)))
def test_fuzz_model_file(model_bytes, edits, cut):
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(mutate(model_bytes, edits, cut))
        f.flush()
        try:
            det = load_model(f.name, backbone=tiny_backbone())
        except ModelFileError as e:
            assert "\n" not in str(e)
        else:
            assert len(det.coef_) == len(det.classifier_.scaler_mean_)

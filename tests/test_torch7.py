"""The Torch7 reader on files in the format's documented layout (tests/t7_writer.py), including
the parts a real model file uses: shared references, strided tensors over one storage, old
unversioned class names; and what it must refuse: Lua code, truncation, out-of-range tensors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from t7_writer import Legacy, LuaFunction, Module, Storage, TensorView, dumps

from fakespotter.backbones import torch7


def test_plain_values_and_tables():
    data = dumps({"n": 2.5, "i": 3, "s": "relu", "yes": True, "no": False, "nil": None, 1: "a"})
    value = torch7.read(data)
    assert value == {"n": 2.5, "i": 3.0, "s": "relu", "yes": True, "no": False, "nil": None, 1: "a"}
    assert torch7.read(dumps(["x", "y"])) == {1: "x", 2: "y"}  # Lua arrays keyed from 1


def test_torch_object_fields_and_shared_references():
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    shared = Module("nn.ReLU", {"inplace": False})
    root = Module("nn.Sequential", {"modules": [shared, shared], "weight": weight, "w2": weight})
    value = torch7.read(dumps(root))
    assert isinstance(value, torch7.TorchObject)
    assert value.class_name == "nn.Sequential" and value.version == 1
    first, second = value.fields["modules"][1], value.fields["modules"][2]
    assert first is second and first.class_name == "nn.ReLU"  # one object, referenced twice
    assert value.fields["weight"] is value.fields["w2"]
    np.testing.assert_array_equal(value.fields["weight"], weight)
    assert value.fields["weight"].dtype == np.float32


def test_strided_tensors_share_one_storage():
    storage = Storage(np.arange(20, dtype=np.float64))
    transposed = TensorView(storage, offset=2, sizes=(3, 4), strides=(1, 3))  # a .t() view
    narrowed = TensorView(storage, offset=15, sizes=(5,), strides=(1,))
    value = torch7.read(dumps({"a": transposed, "b": narrowed, "c": storage}))
    full = np.arange(20, dtype=np.float64)
    np.testing.assert_array_equal(
        value["a"], np.array([[full[2 + r + 3 * c] for c in range(4)] for r in range(3)])
    )
    np.testing.assert_array_equal(value["b"], full[15:20])
    np.testing.assert_array_equal(value["c"], full)  # a storage is read as a 1-d array


def test_every_element_type_and_empty_tensors():
    arrays = {
        "f": np.array([1.5, -2], np.float32),
        "d": np.array([1e300], np.float64),
        "l": np.array([-(2**40)], np.int64),
        "i": np.array([7], np.int32),
        "b": np.array([255], np.uint8),
        "empty": np.empty(0, np.float32),
    }
    value = torch7.read(dumps(arrays))
    for key, array in arrays.items():
        assert value[key].dtype == array.dtype and value[key].shape == array.shape
        np.testing.assert_array_equal(value[key], array)
    assert torch7.read(dumps(Storage(np.array([736, 3, 3])))).tolist() == [736, 3, 3]


def test_unversioned_class_names_from_old_files():
    value = torch7.read(dumps(Legacy(Module("nn.Linear", {"bias": np.ones(2, np.float32)}))))
    assert value.class_name == "nn.Linear" and value.version == 0


def test_a_self_referring_module_is_read_not_looped():
    module = Module("nn.Sequential", {})
    module.fields["self"] = module
    value = torch7.read(dumps(module))
    assert value.fields["self"] is value


def test_lua_code_is_refused():
    with pytest.raises(ValueError, match="Lua code"):
        torch7.read(dumps(Module("nn.Module", {"hook": LuaFunction(b"\x1bLJ\x01 bytecode")})))


@pytest.mark.parametrize(
    "data, message",
    [
        (dumps(Module("nn.ReLU", {}))[:-3], "truncated"),
        (dumps(None) + b"\0", "bytes after"),
        (struct.pack("<i", 9), "type tag 9"),
        (dumps(TensorView(Storage(np.zeros(4, np.float32)), 2, (3,), (1,))), "past its storage"),
        (dumps(TensorView(Storage(np.zeros(4, np.float32)), 0, (2,), (-1,))), "negative"),
    ],
)
def test_malformed_files_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        torch7.read(data)


def test_storage_claiming_more_than_the_file_is_refused_before_allocating():
    data = bytearray(dumps(Storage(np.zeros(2, np.float32))))
    count_at = data.index(b"torch.FloatStorage") + len("torch.FloatStorage")
    data[count_at : count_at + 8] = struct.pack("<q", 2**60)
    with pytest.raises(ValueError, match="larger than the file"):
        torch7.read(bytes(data))


def test_torchfile_reads_the_writers_files_the_same(tmp_path):
    """Cross-check of the test writer (and so of what the reader is tested on) against
    torchfile, an independent Torch7 reader, when it is installed."""
    torchfile = pytest.importorskip("torchfile")
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    root = Module("nn.Linear", {"weight": weight, "bias": np.ones(4, np.float32), "p": 2})
    path = tmp_path / "linear.t7"
    path.write_bytes(dumps(root))
    theirs = torchfile.load(str(path))
    ours = torch7.read(path)
    assert theirs.torch_typename() == b"nn.Linear" == ours.class_name.encode()
    np.testing.assert_array_equal(theirs[b"weight"], ours.fields["weight"])
    np.testing.assert_array_equal(theirs[b"bias"], ours.fields["bias"])
    assert theirs[b"p"] == ours.fields["p"] == 2

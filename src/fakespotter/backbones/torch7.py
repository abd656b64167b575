"""Torch7's binary serialization (Lua ``torch.save``, ``.t7`` files), read as plain data.

A ``.t7`` file is a Lua object graph. This reader turns it into numbers, strings, booleans,
dicts, numpy arrays and :class:`TorchObject` records, and nothing else: the format can also
hold Lua functions (bytecode), and a file holding any is refused, never loaded or kept.

The layout, from torch7's ``File.lua`` (``writeObject`` / ``readObject``) and the ``write`` /
``read`` methods of ``generic/Tensor.c`` and ``generic/Storage.c``: every value opens with an
int32 type tag.

* 0 nil; 1 number: a float64; 2 string: int32 length, then the bytes; 5 boolean: int32, 1 =
  true.
* 3 table: an int32 reference index, then, the first time that index appears, an int32 pair
  count and that many (key, value) objects.
* 4 torch object: an int32 reference index, then, the first time, the version string ``"V n"``
  and the class name (a first string not of that form *is* the class name: files from before
  versioning), then the class's own layout. A ``*Storage`` holds an int64 element count and the
  elements; a ``*Tensor`` holds int32 ndim, int64 sizes[ndim], int64 strides[ndim] (in
  elements), an int64 1-based storage offset, then its storage object (nil when empty); any
  other class (an ``nn`` module) holds one table object: its fields.
* 6, 7, 8 functions: Lua bytecode and upvalues. Refused.

An object or table met again is its tag and index only; the reader returns the very same
Python object, so shared weights stay shared. Ints are 4 bytes, longs 8, little-endian: the
layout of files written on 64-bit Linux and macOS (where OpenFace's models were made).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5
FUNCTION, LEGACY_RECUR_FUNCTION, RECUR_FUNCTION = 6, 7, 8

# Element types of Torch's storages (and their tensors); Cuda ones are saved in the same layout.
_ELEMENT_TYPES = {
    "Byte": "u1",
    "Char": "i1",
    "Short": "<i2",
    "Int": "<i4",
    "Long": "<i8",
    "Float": "<f4",
    "Double": "<f8",
    "Half": "<f2",
}
_CUDA_ALIASES = {"Cuda": "Float"}  # torch.CudaTensor is the float one
_MAX_DEPTH = 256  # nesting a real model needs is ~10; deeper is a hostile file
_MAX_DIMS = 64


@dataclass(eq=False)
class TorchObject:
    """A Torch class instance other than a tensor or storage: its class name and fields."""

    class_name: str
    version: int
    fields: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # fields may hold whole networks
        return f"TorchObject({self.class_name!r})"


def read(source: str | Path | bytes) -> Any:
    """The object a ``.t7`` file holds (a path, or its bytes). ValueError if it is not one."""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read {source}: {error.strerror}") from None
    reader = _Reader(memoryview(data))
    try:
        value = reader.object(0)
    except struct.error:
        raise ValueError("truncated Torch7 file") from None
    if reader.position != len(data):
        raise ValueError(f"{len(data) - reader.position} bytes after the Torch7 object")
    return value


def element_type(class_name: str, suffix: str) -> np.dtype | None:
    """numpy dtype of ``torch.<Type><suffix>`` ('Tensor' or 'Storage'); None for other names."""
    if not (class_name.startswith("torch.") and class_name.endswith(suffix)):
        return None
    kind = class_name[len("torch.") : -len(suffix)]
    kind = _CUDA_ALIASES.get(kind, kind.removeprefix("Cuda"))
    code = _ELEMENT_TYPES.get(kind)
    return None if code is None else np.dtype(code)


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.position = 0
        self.seen: dict[int, Any] = {}  # reference index -> the object read for it

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.position + n > len(self.data):
            raise ValueError("truncated Torch7 file")
        chunk = self.data[self.position : self.position + n]
        self.position += n
        return chunk

    def int32(self) -> int:
        return struct.unpack("<i", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack("<q", self._take(8))[0]

    def string(self) -> str:
        # Lua strings are bytes; surrogateescape keeps any that are not UTF-8 round-trippable
        return bytes(self._take(self.int32())).decode("utf-8", "surrogateescape")

    def object(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("Torch7 objects nested too deeply")
        tag = self.int32()
        if tag == NIL:
            return None
        if tag == NUMBER:
            return struct.unpack("<d", self._take(8))[0]
        if tag == STRING:
            return self.string()
        if tag == BOOLEAN:
            return self.int32() == 1
        if tag in (FUNCTION, LEGACY_RECUR_FUNCTION, RECUR_FUNCTION):
            raise ValueError("the Torch7 file holds Lua code; a weight file needs none")
        if tag not in (TABLE, TORCH):
            raise ValueError(f"unknown Torch7 type tag {tag}")
        index = self.int32()
        if index in self.seen:
            return self.seen[index]
        if tag == TABLE:
            return self._table(index, depth)
        return self._torch_object(index, depth)

    def _table(self, index: int, depth: int) -> dict:
        table: dict = {}
        self.seen[index] = table  # before its contents: a table may hold itself
        count = self.int32()
        if count < 0:
            raise ValueError("negative Torch7 table size")
        for _ in range(count):
            key = self.object(depth + 1)
            value = self.object(depth + 1)
            if isinstance(key, float) and key.is_integer():
                key = int(key)  # Lua arrays are tables keyed 1..n
            try:
                table[key] = value
            except TypeError:  # a table or object as a key: legal Lua, never in a model
                raise ValueError("Torch7 table keyed by a table") from None
        return table

    def _torch_object(self, index: int, depth: int) -> Any:
        version_text = self.string()
        if version_text.startswith("V "):
            try:
                version = int(float(version_text[2:]))
            except ValueError:
                raise ValueError(f"bad Torch7 version string {version_text!r}") from None
            class_name = self.string()
        else:  # written before Torch had versions: the first string is the class name
            version, class_name = 0, version_text
        storage_type = element_type(class_name, "Storage")
        if storage_type is not None:
            storage = self._storage(storage_type)
            self.seen[index] = storage
            return storage
        tensor_type = element_type(class_name, "Tensor")
        if tensor_type is not None:
            tensor = self._tensor(tensor_type, depth)
            self.seen[index] = tensor
            return tensor
        if not class_name or not class_name.isprintable():
            raise ValueError("bad Torch7 class name")
        obj = TorchObject(class_name, version)
        self.seen[index] = obj  # before its fields: a module may refer to itself
        fields = self.object(depth + 1)
        if not isinstance(fields, dict):
            raise ValueError(f"{class_name} has no field table")
        obj.fields = fields
        return obj

    def _storage(self, dtype: np.dtype) -> np.ndarray:
        count = self.int64()
        if count < 0 or count * dtype.itemsize > len(self.data) - self.position:
            raise ValueError("Torch7 storage larger than the file")
        raw = self._take(count * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))

    def _tensor(self, dtype: np.dtype, depth: int) -> np.ndarray:
        ndim = self.int32()
        if not 0 <= ndim <= _MAX_DIMS:
            raise ValueError(f"Torch7 tensor with {ndim} dimensions")
        sizes = [self.int64() for _ in range(ndim)]
        strides = [self.int64() for _ in range(ndim)]
        offset = self.int64() - 1
        storage = self.object(depth + 1)
        if storage is None or ndim == 0:  # how Torch writes an empty tensor
            return np.empty((0,), dtype=dtype.newbyteorder("="))
        if not isinstance(storage, np.ndarray) or storage.dtype != dtype.newbyteorder("="):
            raise ValueError("Torch7 tensor whose storage is of another type")
        if min(sizes) < 0 or min(strides) < 0 or offset < 0:
            raise ValueError("Torch7 tensor with negative size, stride or offset")
        if 0 in sizes:
            return np.empty(sizes, dtype=storage.dtype)
        last = offset + sum(
            (size - 1) * stride for size, stride in zip(sizes, strides, strict=True)
        )
        if last >= len(storage):
            raise ValueError("Torch7 tensor reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            storage[offset:],
            shape=sizes,
            strides=[stride * storage.itemsize for stride in strides],
            writeable=False,
        )
        return np.array(view)  # a contiguous copy: the view would pin the whole storage

"""A writer of Torch7's binary ``.t7`` format, for tests only.

Written from the format's own layout, not from fakespotter's reader: torch7 ``File.lua``
``writeObject`` (int32 type tags nil 0, number 1, string 2, table 3, torch 4, boolean 5,
function 6 / 8; tables and torch objects carry an int32 reference index, written in full the
first time and as the index alone after; a torch object writes ``"V 1"``, its class name, then
its fields as one table) and the ``write`` methods of ``generic/Tensor.c`` (int32 ndim, int64
sizes, int64 strides, int64 1-based storage offset, then the storage object) and
``generic/Storage.c`` (int64 count, then the elements). Ints 4 bytes, longs 8, little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

_TENSOR_CLASSES = {
    np.dtype(np.float32): "Float",
    np.dtype(np.float64): "Double",
    np.dtype(np.int64): "Long",
    np.dtype(np.int32): "Int",
    np.dtype(np.uint8): "Byte",
}


@dataclass(eq=False)
class Module:
    """A Torch class instance (an nn module): its class name and fields, written in order."""

    class_name: str
    fields: dict = field(default_factory=dict)


@dataclass(eq=False)
class Storage:
    """A torch.*Storage of these elements (e.g. nn.Reshape's ``size``, a LongStorage)."""

    values: np.ndarray


@dataclass(eq=False)
class TensorView:
    """A tensor over part of a storage: ``offset`` (0-based here), sizes and strides in
    elements, as Torch keeps a narrowed or transposed tensor."""

    storage: Storage
    offset: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]


@dataclass(eq=False)
class LuaFunction:
    """A serialized Lua function: bytecode and an upvalue table."""

    bytecode: bytes


@dataclass(eq=False)
class Legacy:
    """A torch object written the pre-versioning way: the class name with no "V n" before."""

    module: Module


class _Writer:
    def __init__(self, version: str = "V 1") -> None:
        self.out = bytearray()
        self.index: dict[int, int] = {}
        self.keep: list = []  # written objects stay alive, so their ids stay unique
        self.version = version

    def int32(self, value: int) -> None:
        self.out += struct.pack("<i", value)

    def int64(self, value: int) -> None:
        self.out += struct.pack("<q", value)

    def string(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.int32(len(data))
        self.out += data

    def _reference(self, obj, tag: int) -> bool:
        """Write tag and index; True when the object itself must follow (first time)."""
        self.int32(tag)
        if id(obj) in self.index:
            self.int32(self.index[id(obj)])
            return False
        self.index[id(obj)] = len(self.index) + 1
        self.keep.append(obj)
        self.int32(self.index[id(obj)])
        return True

    def value(self, obj) -> None:
        if obj is None:
            self.int32(0)
        elif isinstance(obj, bool):
            self.int32(5)
            self.int32(1 if obj else 0)
        elif isinstance(obj, (int, float)):
            self.int32(1)
            self.out += struct.pack("<d", float(obj))
        elif isinstance(obj, (str, bytes)):
            self.int32(2)
            self.string(obj)
        elif isinstance(obj, (dict, list)):
            pairs = obj.items() if isinstance(obj, dict) else enumerate(obj, 1)
            if self._reference(obj, 3):
                pairs = list(pairs)
                self.int32(len(pairs))
                for key, item in pairs:
                    self.value(key)
                    self.value(item)
        elif isinstance(obj, LuaFunction):
            if self._reference(obj, 8):
                self.string(obj.bytecode)
                self.value({})  # upvalues
        elif isinstance(obj, Legacy):
            if self._reference(obj, 4):
                self.string(obj.module.class_name)
                self.value(obj.module.fields)
        elif isinstance(obj, Module):
            if self._reference(obj, 4):
                self.string(self.version)
                self.string(obj.class_name)
                self.value(obj.fields)
        elif isinstance(obj, Storage):
            if self._reference(obj, 4):
                self.string(self.version)
                self.string(f"torch.{_TENSOR_CLASSES[obj.values.dtype]}Storage")
                self.int64(obj.values.size)
                self.out += obj.values.astype(obj.values.dtype.newbyteorder("<")).tobytes()
        elif isinstance(obj, np.ndarray):
            contiguous = np.ascontiguousarray(obj)
            strides = [s // contiguous.itemsize for s in contiguous.strides]
            view = TensorView(Storage(contiguous.reshape(-1)), 0, contiguous.shape, tuple(strides))
            self._tensor(obj, contiguous.dtype, view if obj.size else None)
        elif isinstance(obj, TensorView):
            self._tensor(obj, obj.storage.values.dtype, obj)
        else:
            raise TypeError(f"cannot write {type(obj).__name__}")

    def _tensor(self, key, dtype: np.dtype, view: TensorView | None) -> None:
        if not self._reference(key, 4):
            return
        self.string(self.version)
        self.string(f"torch.{_TENSOR_CLASSES[dtype]}Tensor")
        if view is None:  # an empty tensor: no dimensions, no storage
            self.int32(0)
            self.int64(1)
            self.value(None)
            return
        self.int32(len(view.sizes))
        for size in view.sizes:
            self.int64(size)
        for stride in view.strides:
            self.int64(stride)
        self.int64(view.offset + 1)  # Lua counts from 1
        self.value(view.storage)


def dumps(obj, version: str = "V 1") -> bytes:
    writer = _Writer(version)
    writer.value(obj)
    return bytes(writer.out)

"""The detector's model file: one safetensors file, JSON metadata in its header, no pickle.

Layout: ``u64 little-endian header length`` + ``JSON header`` + raw little-endian tensor bytes,
as the safetensors format defines it. Our metadata lives in the header's ``__metadata__``
under the key ``fakespotter`` as a JSON string.

Loading checks the file's size, the header's length, every tensor's dtype, shape and byte
range, and the metadata's keys and types *before* reading any tensor data, so a damaged or
crafted file is refused with a one-line reason and never causes a large allocation.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from safetensors.numpy import save_file

from fakespotter.errors import UserError

FORMAT_VERSION = 1
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024
_DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64}


class ModelFileError(UserError):
    """The file is not a model this version of fakespotter can load (one-line reason)."""


def model_id(path: str | os.PathLike) -> str:
    """A short identity of a model file: the first 16 hex digits of its sha256. Recorded in
    every result row, so a resumed scan can tell which model began it."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with _open_model(path) as (f, size):
            # the size checked, even if the file grows while it is read
            while size > 0 and (block := f.read(min(size, 1 << 20))):
                digest.update(block)
                size -= len(block)
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror or e}") from None
    return digest.hexdigest()[:16]


def metadata_keys(path: str | os.PathLike) -> set[str]:
    """The keys of a safetensors file's ``__metadata__`` (``fakespotter`` for a model file,
    ``fakespotter_kit`` for an update kit); empty for anything that is not such a file.
    Never raises: the overwrite checks ask it whether a file there is one of ours."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n)) if n <= MAX_HEADER_BYTES else None
    except (OSError, ValueError, struct.error):
        return set()
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        return set()
    return set(header["__metadata__"])


def is_model_file(path) -> bool:
    """Whether ``path`` begins as a fakespotter model file (safetensors, our metadata)."""
    return "fakespotter" in metadata_keys(path)


@contextlib.contextmanager
def _open_model(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """The open file and its size, once it is known to be a regular file of at most
    ``MAX_FILE_BYTES``. Opened without blocking and checked on the open descriptor: a FIFO
    would wait for a writer forever, and /dev/zero never ends."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(f"model file {path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ModelFileError(
                f"model file is {info.st_size} bytes, more than the {MAX_FILE_BYTES} allowed"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, info.st_size


def save(path: str | Path, metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    meta = dict(metadata, format_version=FORMAT_VERSION)
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        save_file(arrays, str(tmp), metadata={"fakespotter": text})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a model file is meant to be shared
        tmp.replace(path)  # never leave a half-written model under the real name
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves no half file behind
        raise


def load(
    path: str | Path,
    schema: dict[str, type | tuple[type, ...]],
    array_shapes,
    optional: dict[str, type | tuple[type, ...]] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate a model file.

    ``schema``: metadata key -> allowed type(s); every key must be present, no other allowed
    beyond ``optional`` (keys that newer files add: absent in older ones).
    ``array_shapes(metadata) -> {name: shape}``: the exact tensors the metadata implies.
    """
    path = Path(path)
    try:
        with _open_model(path) as (f, size):
            if size < 8:
                raise ModelFileError("not a fakespotter model file (too short)")
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > min(MAX_HEADER_BYTES, size - 8):
                raise ModelFileError("not a fakespotter model file (bad header length)")
            raw_header = f.read(header_len)
            header = _parse_json(raw_header, "header")
            metadata = _read_metadata(header)
            _check_metadata(metadata, schema, optional or {})
            expected = array_shapes(metadata)
            data_start = 8 + header_len
            layout = _check_layout(header, expected, size - data_start)
            arrays = {}
            for name, (dtype, shape, begin, end) in layout.items():
                f.seek(data_start + begin)
                buf = f.read(end - begin)
                if len(buf) != end - begin:
                    raise ModelFileError("model file is truncated")
                arr = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
                if not np.all(np.isfinite(arr)):
                    raise ModelFileError(f"tensor {name!r} holds NaN or infinite values")
                arrays[name] = arr.astype(arr.dtype.newbyteorder("="))
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror or e}") from None
    return metadata, arrays


def _parse_json(raw: bytes, what: str):
    try:
        return json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_int=_plausible_int
        )
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError):
        # RecursionError: a crafted header of deeply nested brackets
        raise ModelFileError(f"not a fakespotter model file (damaged {what})") from None


def _reject_constant(name: str):
    raise ValueError(name)  # NaN/Infinity have no place in our metadata


def _plausible_int(text: str) -> int:
    value = int(text)
    if abs(value) > 2**53:  # no count or offset of ours is this big; floats could not hold it
        raise ValueError(text)
    return value


def _read_metadata(header) -> dict[str, Any]:
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ModelFileError("not a fakespotter model file (no metadata)")
    text = header["__metadata__"].get("fakespotter")
    if not isinstance(text, str):
        raise ModelFileError(
            "not a fakespotter model file (safetensors without fakespotter metadata)"
        )
    metadata = _parse_json(text.encode("utf-8"), "metadata")
    if not isinstance(metadata, dict):
        raise ModelFileError("not a fakespotter model file (metadata is not an object)")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError("not a fakespotter model file (no format version)")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"model file format {version} is newer than this fakespotter "
            f"reads ({FORMAT_VERSION}); upgrade fakespotter"
        )
    if version < 1:
        raise ModelFileError(f"unknown model file format {version}")
    return metadata


def _check_metadata(metadata: dict[str, Any], schema, optional) -> None:
    keys = set(metadata) - {"format_version"}
    missing = sorted(set(schema) - keys)
    extra = sorted(keys - set(schema) - set(optional))
    if missing:
        raise ModelFileError(f"model file lacks {missing[0]!r}")
    if extra:
        raise ModelFileError(f"model file has an unexpected key {extra[0]!r}")
    for key, types in [*schema.items(), *((k, t) for k, t in optional.items() if k in keys)]:
        value = metadata[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
            raise ModelFileError(f"model file key {key!r} has the wrong type")
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelFileError(f"model file key {key!r} is not finite")


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _check_layout(header: dict, expected: dict[str, tuple[int, ...]], data_len: int):
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if set(tensors) != set(expected):
        odd = sorted(set(tensors) ^ set(expected))[0]
        raise ModelFileError(f"model file tensors do not match its metadata (tensor {odd!r})")
    layout = {}
    for name, shape in expected.items():
        info = tensors[name]
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("dtype"), str)
            or info["dtype"] not in _DTYPES
        ):
            raise ModelFileError(f"tensor {name!r} has an unsupported type")
        if not isinstance(info.get("shape"), list) or info["shape"] != list(shape):
            raise ModelFileError(
                f"tensor {name!r} has shape {info.get('shape')!r:.40}, expected {list(shape)}"
            )
        offsets = info.get("data_offsets")
        dtype = _DTYPES[info["dtype"]]
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or offsets[1] - offsets[0] != nbytes
            or offsets[0] < 0
            or offsets[1] > data_len
        ):
            raise ModelFileError(f"tensor {name!r} lies outside the file (damaged or truncated)")
        layout[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    return layout

"""One batch of paths in, one Arrow table out: the core that both scan engines call, so their
results are the same by construction.

Each path gives every row ``fakespotter detect`` gives it (one per face, or one with the
reason there is none), through the same reading, face finding and scoring code
(``fakespotter.photos``); nothing a file holds can fail the batch.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from fakespotter.collection.sources import is_url, read_url_image
from fakespotter.photos import read_faces, score_rows
from fakespotter.rows import Row

# Row's fields that a scan does not store: a scan holds photos (no video times), and its one
# model is in the folder's manifest
NOT_STORED = ("start", "end", "model")
_ARROW = {str: pa.string(), int: pa.int32(), float: pa.float64()}
_BOX = pa.list_(pa.float64(), 4)  # x0, y0, x1, y1 in the photo's pixels


def _arrow_type(name: str, hint) -> pa.DataType:
    """The Arrow type of one of Row's fields, from its type hint (``X | None`` is nullable)."""
    if name == "box":
        return _BOX
    kinds = [k for k in typing.get_args(hint) or (hint,) if k is not type(None)]
    return _ARROW[kinds[0]]


def _schema() -> pa.Schema:
    """The part files' schema: the rows' own fields as :class:`Row` declares them (so a field
    added there is stored, or left out here on purpose), plus the path's exact bytes and the
    file's face count."""
    hints = typing.get_type_hints(Row)
    stored = [f.name for f in dataclasses.fields(Row) if f.name not in ("path", *NOT_STORED)]
    return pa.schema(
        [
            ("path", pa.string()),  # the path or URL as text (bytes not UTF-8 replaced)
            ("path_bytes", pa.binary()),  # the exact name where it is not UTF-8, else null
            *((name, _arrow_type(name, hints[name])) for name in stored),
            ("n_faces", pa.int32()),  # faces found in the file (0 for a row with an error)
        ]
    )


SCHEMA = _schema()
ROW_COLUMNS = SCHEMA.names[2:-1]  # the columns that are Row's fields, by name


def key_columns(key: str) -> tuple[str, bytes | None]:
    """(path, path_bytes) of a path as Python holds it (undecodable bytes as surrogates)."""
    raw = key.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), raw


def key_of(path: str, path_bytes: bytes | None) -> str:
    """The inverse of :func:`key_columns`."""
    return path if path_bytes is None else path_bytes.decode("utf-8", "surrogateescape")


def keys_in(table: pa.Table) -> list[str]:
    """The path key of every row of a table of :data:`SCHEMA` (exact where not UTF-8)."""
    paths, raw = table.column("path").to_pylist(), table.column("path_bytes").to_pylist()
    return [key_of(p, b) for p, b in zip(paths, raw, strict=True)]


def scan_batch(scanner, keys: Sequence[str]) -> pa.Table:
    """The rows of every path in ``keys``, in order, as a table of :data:`SCHEMA`.

    ``scanner`` is a :class:`fakespotter.collection.scanner.Scanner` (a loaded model and
    its face cropper)."""
    found = (
        read_faces(
            scanner.cropper,
            key if is_url(key) else Path(key),
            load=read_url_image if is_url(key) else None,
            **scanner.limits,
        )
        for key in keys
    )
    rows = list(
        score_rows(scanner.detector, found, batch_size=scanner.batch_size, model=scanner.model)
    )
    return rows_table(rows)


def rows_table(rows: Sequence[Row]) -> pa.Table:
    faces: dict[str, int] = {}
    for row in rows:
        faces[row.path] = faces.get(row.path, 0) + (row.face is not None)
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for row in rows:
        path, raw = key_columns(row.path)
        columns["path"].append(path)
        columns["path_bytes"].append(raw)
        columns["n_faces"].append(faces[row.path])
        for name in ROW_COLUMNS:
            columns[name].append(getattr(row, name))
    return pa.table(columns, schema=SCHEMA)

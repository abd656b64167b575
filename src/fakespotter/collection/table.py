"""One batch of paths in, one Arrow table out: the core that both scan engines call, so their
results are the same by construction.

Each path gives every row ``fakespotter detect`` gives it (one per face, or one with the
reason there is none), through the same reading, face finding and scoring code
(``fakespotter.photos``); nothing a file holds can fail the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from fakespotter.collection.sources import is_url, read_url_image
from fakespotter.photos import read_faces, score_rows
from fakespotter.rows import Row

SCHEMA = pa.schema(
    [
        ("path", pa.string()),  # the path or URL as text (bytes that are not UTF-8 replaced)
        ("path_bytes", pa.binary()),  # the exact name where it is not UTF-8, else null
        ("face", pa.int32()),  # faces of one photo are numbered left to right from 0
        ("box", pa.list_(pa.float64(), 4)),  # x0, y0, x1, y1 in the photo's pixels
        ("p_fake", pa.float64()),
        ("label", pa.string()),  # fake, real or uncertain
        ("error", pa.string()),  # why there is no score
        ("detection_score", pa.float64()),  # the face detector's confidence
        ("face_size", pa.int32()),
        ("warning", pa.string()),
        ("novelty", pa.float64()),
        ("n_faces", pa.int32()),  # faces found in the file (0 for a row with an error)
    ]
)


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
        for name in SCHEMA.names[2:-1]:
            columns[name].append(getattr(row, name))
    return pa.table(columns, schema=SCHEMA)

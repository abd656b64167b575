"""Group names per image (generator, real source) for per-group metrics."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path, PurePath

from fakespotter.errors import UserError

__all__ = ["UNKNOWN", "groups_from_manifest", "groups_from_prefix"]

UNKNOWN = "unknown"


def _parts(path: str | os.PathLike) -> tuple[str, ...]:
    return PurePath(str(path).replace("\\", "/")).parts


def groups_from_manifest(
    paths: Iterable[str | os.PathLike], manifest_csv: str | os.PathLike, column: str = "generator"
) -> list[str]:
    """Group of each path from a manifest CSV (columns ``file`` and ``column``).

    A manifest row matches a path when its ``file`` is a trailing part of the path
    (``/data/faces/test/fake/a.jpg`` matches ``test/fake/a.jpg``); the row sharing the most
    trailing path components wins, so a bare file name still matches when folders moved.
    Paths that match no row get ``"unknown"``.  An empty ``column`` value falls back to
    ``source``.  Raises ValueError for a manifest without the needed columns, or a path
    that matches rows of different groups equally well.
    """
    with open(manifest_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "file" not in fields or column not in fields:
            raise UserError(
                f"{manifest_csv}: manifest needs columns 'file' and {column!r}, "
                f"has {', '.join(fields) or 'none'}"
            )
        by_name: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for row in reader:
            parts = _parts(row["file"])
            if not parts:
                continue
            group = (row.get(column) or "").strip() or (row.get("source") or "").strip() or UNKNOWN
            by_name.setdefault(parts[-1], []).append((parts, group))

    out = []
    for path in paths:
        parts = _parts(path)
        candidates = by_name.get(parts[-1], []) if parts else []
        best, best_groups = 0, set()
        for row_parts, group in candidates:
            shared = _shared_tail(parts, row_parts)
            if shared > best:
                best, best_groups = shared, {group}
            elif shared == best and shared:
                best_groups.add(group)
        if len(best_groups) > 1:
            raise UserError(
                f"{path}: matches manifest rows of several groups "
                f"({', '.join(sorted(best_groups))})"
            )
        out.append(best_groups.pop() if best_groups else UNKNOWN)
    return out


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def groups_from_prefix(paths: Iterable[str | os.PathLike]) -> list[str]:
    """File-name prefix before the first '-' (``sg1-zoya_00BY.jpg`` -> ``sg1``), else "unknown"."""
    out = []
    for path in paths:
        name = Path(path).name
        prefix, sep, _ = name.partition("-")
        out.append(prefix if sep and prefix else UNKNOWN)
    return out

"""Writing scan rows as they come (table, csv, jsonl, json) and resuming an interrupted csv/jsonl.

Paths that are not valid UTF-8 (a Linux file name is any bytes) are kept exact, not mangled:
Python reads such a name as a ``str`` with surrogate escapes (``os.fsdecode``), and

- csv, jsonl rows' text and the table are written as UTF-8 with ``surrogateescape``: the path
  in the file is byte for byte the file's name (``os.fsencode`` of the read-back text with
  ``errors="surrogateescape"`` gives it back);
- json and jsonl escape every non-ASCII character (``\\u00e9``); an undecodable byte 0xNN
  appears as the lone surrogate escape ``\\udcNN``, which Python's ``json`` reads back to the
  same ``str`` (and ``os.fsencode`` to the same bytes).

Crash safety: each file's rows go out in one ``write`` call on an unbuffered file (a killed
process leaves whole files' rows or nothing of them, except on power loss mid-write), with an
``fsync`` every few rows; ``resume`` drops an incomplete last record anyway. The single-list
``json`` format cannot be appended to, so only csv and jsonl can be resumed.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import BinaryIO, Iterable

from fakespotter.scan import Row

FIELDS = ["path", "face", "box", "p_fake", "label", "error"]
FORMATS = ("table", "json", "csv", "jsonl")
RESUMABLE = ("csv", "jsonl")
_CSV_HEADER = ",".join(FIELDS) + "\n"
_TABLE_HEADER = f"{'p_fake':>7}  {'label':5}  {'face':>4}  path\n"


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _csv_line(row: Row) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([
        row.path, "" if row.face is None else row.face,
        "" if row.box is None else " ".join(map(str, row.box)),
        "" if row.p_fake is None else f"{row.p_fake:.6f}", row.label or "", row.error or ""])
    return buf.getvalue()


def _table_line(row: Row) -> str:
    if row.error:
        return f"{'-':>7}  {'-':5}  {'-':>4}  {row.path}  ({row.error})\n"
    return f"{row.p_fake:7.3f}  {row.label:5}  {row.face:>4}  {row.path}\n"


class RowWriter:
    """Streams rows to a binary file in one format; ``write`` takes all rows of one input file."""

    def __init__(self, out: BinaryIO, fmt: str, *, header: bool = True, fsync_every: int = 0):
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}")
        self.out, self.fmt, self.fsync_every = out, fmt, fsync_every
        self.n_rows = 0
        self._unsynced = 0
        start = {"csv": _CSV_HEADER, "table": _TABLE_HEADER, "json": "["}.get(fmt, "")
        if header and start:
            self._put(start)

    def write(self, rows: Iterable[Row]) -> None:
        lines = []
        for row in rows:
            if self.fmt == "csv":
                lines.append(_csv_line(row))
            elif self.fmt == "table":
                lines.append(_table_line(row))
            else:
                sep = ("\n  " if self.n_rows == 0 else ",\n  ") if self.fmt == "json" else ""
                end = "" if self.fmt == "json" else "\n"
                lines.append(sep + json.dumps(row.as_dict()) + end)
            self.n_rows += 1
        self._put("".join(lines))
        self._unsynced += len(lines)
        if self.fsync_every and self._unsynced >= self.fsync_every:
            self.sync()

    def close(self) -> None:
        if self.fmt == "json":
            self._put("\n]\n" if self.n_rows else "]\n")
        self.sync()

    def sync(self) -> None:
        self.out.flush()
        if self.fsync_every:
            os.fsync(self.out.fileno())
        self._unsynced = 0

    def _put(self, text: str) -> None:
        if text:
            self.out.write(encode(text))
            self.out.flush()


def resume(path: str | os.PathLike, fmt: str) -> tuple[set[str], bool]:
    """Prepare ``path`` for appending: cut an incomplete last record, return the paths it holds.

    Returns (paths already scored, whether the header must still be written). Refuses a file
    that is not this program's ``fmt`` output, so resuming never appends to a stranger's file.
    """
    if fmt not in RESUMABLE:
        raise ValueError(f"--resume needs --format {' or '.join(RESUMABLE)}, not {fmt}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set(), True
    text = decode(data)
    if fmt == "csv":
        if _CSV_HEADER.startswith(text):  # empty, or killed while writing the header
            path.write_bytes(b"")
            return set(), True
        if not text.startswith(_CSV_HEADER):
            raise ValueError(f"{path} is not a fakespotter csv (its first line is not the header); "
                             "will not resume into it")
        done, keep = _complete_csv(text[len(_CSV_HEADER):])
        keep += len(_CSV_HEADER)
    else:
        done, keep = _complete_jsonl(text)
    if keep < len(text):
        with open(path, "r+b") as f:
            f.truncate(len(encode(text[:keep])))
    return done, fmt == "csv" and keep == 0


def _complete_csv(text: str) -> tuple[set[str], int]:
    """Paths of the complete records of csv ``text`` and where the complete part ends.

    A record is complete when it ends with a newline outside quotes: quotes are doubled
    inside quoted fields, so an even number of them so far means the newline is a record end.
    """
    done: set[str] = set()
    keep = start = quotes = 0
    for line in _lines(text):
        quotes += line.count('"')
        start_next = start + len(line)
        if line.endswith("\n") and quotes % 2 == 0:
            record = next(csv.reader([text[keep:start_next]]), [])
            if len(record) != len(FIELDS):
                break
            done.add(record[0])
            keep, quotes = start_next, 0
        start = start_next
    return done, keep


def _complete_jsonl(text: str) -> tuple[set[str], int]:
    done: set[str] = set()
    keep = 0
    for line in _lines(text):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            break
        done.add(record["path"])
        keep += len(line)
    return done, keep


def _lines(text: str):
    """Split after each "\\n" only (str.splitlines also splits at \\r, \\x1c, \\u2028...)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end

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

Nothing a user wrote is ever lost: ``resume`` refuses a file that is not this program's
output in that format (or was begun with another model), and cuts nothing but an incomplete
last record; ``check_overwritable`` refuses to replace a file that is not a fakespotter output.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fakespotter.errors import UserError
from fakespotter.rows import FIELDS, Row

RESUMABLE = ("csv", "jsonl")
SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_CSV_HEADER = ",".join(FIELDS) + "\n"
_OLD_CSV_HEADER = "path,face,box,p_fake,label,error\n"  # fakespotter 0.1 before row warnings
_JSONL_START = '{"path": '  # how every json row begins
_TABLE_HEADER = f"{'p_fake':>7}  {'label':10} {'face':>4}  {'box':>19}  path\n"


def format_for(output: str | os.PathLike | None, fmt: str | None) -> str:
    """--format, or the one --output's extension names (scan.json -> json), or table."""
    if fmt:
        return fmt
    return SUFFIX_FORMATS.get(Path(output).suffix.lower(), "table") if output else "table"


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _csv_cell(name: str, value) -> str:
    if value is None:
        return ""
    if name == "box":
        return " ".join(map(str, value))
    if name == "p_fake":
        return f"{value:.6f}"
    return str(value)


def _csv_line(row: Row, index: int) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_csv_cell(n, getattr(row, n)) for n in FIELDS])
    return buf.getvalue()


def _table_line(row: Row, index: int) -> str:
    if row.error:
        return f"{'-':>7}  {'-':10} {'-':>4}  {'-':>19}  {row.path}  ({row.error})\n"
    box = ",".join(str(round(v)) for v in row.box) if row.box else "-"
    # a flagged row: "!" after the label, and why at the end of the line
    flag = "!" if row.warning else " "
    note = f"  (warning: {row.warning})" if row.warning else ""
    return f"{row.p_fake:7.3f}  {row.label:9}{flag} {row.face:>4}  {box:>19}  {row.path}{note}\n"


def _jsonl_line(row: Row, index: int) -> str:
    return json.dumps(row.as_dict()) + "\n"


def _json_item(row: Row, index: int) -> str:
    return ("\n  " if index == 0 else ",\n  ") + json.dumps(row.as_dict())


@dataclass(frozen=True)
class OutputFormat:
    """How one output format writes: what opens it, each row (given its index), what closes
    it (given the row count)."""

    header: str
    line: Callable[[Row, int], str]
    footer: Callable[[int], str] = lambda n_rows: ""


# The output formats, one entry each: --format's choices and RowWriter read this table.
WRITERS: dict[str, OutputFormat] = {
    "table": OutputFormat(_TABLE_HEADER, _table_line),
    "json": OutputFormat("[", _json_item, lambda n_rows: "\n]\n" if n_rows else "]\n"),
    "csv": OutputFormat(_CSV_HEADER, _csv_line),
    "jsonl": OutputFormat("", _jsonl_line),
}
FORMATS = tuple(WRITERS)


class RowWriter:
    """Streams rows to a binary file in one format; ``write`` takes all rows of one input file."""

    def __init__(self, out: BinaryIO, fmt: str, *, header: bool = True, fsync_every: int = 0):
        if fmt not in WRITERS:
            raise UserError(f"unknown output format {fmt!r}")
        self.out, self.fmt, self.fsync_every = out, fmt, fsync_every
        self._format = WRITERS[fmt]
        self.n_rows = 0
        self._unsynced = 0
        if header:
            self._put(self._format.header)

    def write(self, rows: Iterable[Row]) -> None:
        lines = []
        for row in rows:
            lines.append(self._format.line(row, self.n_rows))
            self.n_rows += 1
        self._put("".join(lines))
        self._unsynced += len(lines)
        if self.fsync_every and self._unsynced >= self.fsync_every:
            self.sync()

    def close(self) -> None:
        self._put(self._format.footer(self.n_rows))
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


def check_overwritable(path: str | os.PathLike) -> None:
    """Refuse to replace a file that holds something other than a fakespotter output."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = decode(f.read(4096))
    except (FileNotFoundError, IsADirectoryError):
        return
    if head.strip() and not _looks_like_output(head):
        raise UserError(
            f"{path} exists and is not a fakespotter output; will not overwrite "
            "it (remove it or choose another --output)"
        )


def _looks_like_output(head: str) -> bool:
    if head.startswith((_CSV_HEADER, _OLD_CSV_HEADER, _TABLE_HEADER.split("box")[0])):
        return True
    text = head.lstrip("[ \n")
    return text.startswith(_JSONL_START) or head.strip() == "[]"


def resume(path: str | os.PathLike, fmt: str, model: str | None = None) -> tuple[set[str], bool]:
    """Prepare ``path`` for appending: cut an incomplete last record, return the paths it holds.

    Returns (paths already scored, whether the header must still be written). Refuses a file
    that is not this program's ``fmt`` output, and one whose rows were scored by another model
    than ``model``, so resuming never appends to, or cuts, a stranger's file.
    """
    if fmt not in RESUMABLE:
        raise UserError(f"--resume needs --format {' or '.join(RESUMABLE)}, not {fmt}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set(), True
    text = decode(data)
    refuse = f"{path} is not a fakespotter {fmt} output"
    if fmt == "csv":
        if text and _CSV_HEADER.startswith(text):  # killed while writing the header
            path.write_bytes(b"")
            return set(), True
        if not text:
            return set(), True
        if text.startswith(_OLD_CSV_HEADER):
            raise UserError(
                f"{path} was written by an older fakespotter (without model and "
                "warning columns); will not resume into it (start a new file)"
            )
        if not text.startswith(_CSV_HEADER):
            raise UserError(f"{refuse} (its first line is not the header); will not resume into it")
        records, keep = _complete_csv(text[len(_CSV_HEADER) :], refuse)
        keep += len(_CSV_HEADER)
    else:
        records, keep = _complete_jsonl(text, refuse)
    models = {r["model"] for r in records} - {None, ""}
    if model is not None and models - {model}:
        raise UserError(
            f"{path} was begun with another model ({', '.join(sorted(models))}, "
            f"this one is {model}); resume with that model or write a new file"
        )
    if keep < len(text):
        with open(path, "r+b") as f:
            f.truncate(len(encode(text[:keep])))
    return {r["path"] for r in records}, False  # a csv here starts with its header


def _complete_csv(text: str, refuse: str) -> tuple[list[dict], int]:
    """The complete records of csv ``text`` (without the header) and where they end.

    A record is complete when it ends with a newline outside quotes: quotes are doubled
    inside quoted fields, so an even number of them so far means the newline is a record end.
    Only an incomplete last record may be cut; a complete one that is not a row is refused.
    """
    records: list[dict] = []
    keep = start = quotes = 0
    for line in _lines(text):
        quotes += line.count('"')
        start_next = start + len(line)
        if line.endswith("\n") and quotes % 2 == 0:
            record = next(csv.reader([text[keep:start_next]]), [])
            if len(record) != len(FIELDS):
                raise UserError(
                    f"{refuse} (record {len(records) + 1} has {len(record)} fields, "
                    f"not {len(FIELDS)}); will not resume into it"
                )
            records.append(dict(zip(FIELDS, record, strict=False)))
            keep, quotes = start_next, 0
        start = start_next
    return records, keep


def _complete_jsonl(text: str, refuse: str) -> tuple[list[dict], int]:
    records: list[dict] = []
    keep = 0
    for line in _lines(text):
        if not line.endswith("\n"):
            # killed mid-row: cut it, but only when it is the start of one of our rows
            if not (line.startswith(_JSONL_START) or _JSONL_START.startswith(line)):
                raise UserError(f"{refuse} (its last line is not a row); will not resume into it")
            break
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or list(record) != FIELDS:
            raise UserError(
                f"{refuse} (line {len(records) + 1} is not a fakespotter row); "
                "will not resume into it"
            )
        records.append(record)
        keep += len(line)
    return records, keep


def _lines(text: str):
    """Split after each "\\n" only (str.splitlines also splits at \\r, \\x1c, \\u2028...)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end

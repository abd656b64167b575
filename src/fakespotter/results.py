"""Writing scan rows as they come (table, csv, jsonl, json) and resuming an interrupted csv/jsonl.

Paths that are not valid UTF-8 (a Linux file name is any bytes) are kept exact, not mangled:
Python reads such a name as a ``str`` with surrogate escapes (``os.fsdecode``), and

- csv, jsonl rows' text and the table are written as UTF-8 with ``surrogateescape``: the path
  in the file is byte for byte the file's name (``os.fsencode`` of the read-back text with
  ``errors="surrogateescape"`` gives it back);
- json and jsonl escape every non-ASCII character (``\\u00e9``); an undecodable byte 0xNN
  appears as the lone surrogate escape ``\\udcNN``, which Python's ``json`` reads back to the
  same ``str`` (and ``os.fsencode`` to the same bytes).

Crash safety: each file's rows go out as one whole write (repeated while the system takes
less) on an unbuffered file, with an ``fsync`` every few rows. A killed process leaves whole
rows and at most one incomplete last record, which ``resume`` drops. A write that fails (a
full disk, a file size limit) or an ``fsync`` that fails is cut back to the last whole row
(the last synced one for ``fsync``) and ends the command in one line that says how many rows
the file keeps (:class:`OutputWriteError`); only where the file cannot be cut (a pipe) or on
power loss can a half row remain. The single-list ``json`` format cannot be appended to, so
only csv and jsonl can be resumed.

One output, one writer: :class:`OutputLock` holds an exclusive ``flock`` on the output (a
file, or a scan's folder) while a command writes it, so a second command on the same output
is refused in one line instead of writing every row twice (POSIX; on Windows, and on a file
system that cannot lock, nothing is locked).

One overwrite rule for every command (``check_overwritable``): an existing output that holds
something is refused unless ``--overwrite`` is given (or ``--resume``, where a command can
continue it); a file that is not this program's output is never replaced, even then.
``resume`` refuses a file that is not this program's output in that format (or was begun
with another model), and cuts nothing but an incomplete last record.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from fakespotter.errors import UserError, first_line
from fakespotter.rows import FIELDS, Row
from fakespotter.words import plural

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked (OutputLock)
    fcntl = None  # type: ignore[assignment]

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


class OutputWriteError(UserError):
    """Writing an output failed (a full disk...); the file was cut back to its last whole row
    where it could be."""


class RowWriter:
    """Streams rows to a binary file in one format; ``write`` takes all rows of one input file.

    Every write is whole or undone: when the file cannot take a write (or an ``fsync``), it is
    cut back to its last whole row (the last synced one when ``fsync`` failed) and
    :class:`OutputWriteError` says how many rows it wrote. ``name``: the output's name there."""

    def __init__(
        self,
        out: BinaryIO,
        fmt: str,
        *,
        header: bool = True,
        fsync_every: int = 0,
        name: str | os.PathLike | None = None,
    ):
        if fmt not in WRITERS:
            raise UserError(f"unknown output format {fmt!r}")
        self.out, self.fmt, self.fsync_every = out, fmt, fsync_every
        self.name = str(name if name is not None else getattr(out, "name", "the output"))
        self._format = WRITERS[fmt]
        self.n_rows = 0
        self._unsynced = 0
        self._failed = False
        self._whole = self._synced = (self._tell(), 0)  # (size, rows): last write, last fsync
        if header:
            self._put(self._format.header, self.n_rows)

    def write(self, rows: Iterable[Row]) -> None:
        if self._failed:
            raise OutputWriteError(f"{self.name} cannot be written any more")
        before = self.n_rows
        lines = []
        for row in rows:
            lines.append(self._format.line(row, self.n_rows))
            self.n_rows += 1
        self._put("".join(lines), before)
        self._unsynced += len(lines)
        if self.fsync_every and self._unsynced >= self.fsync_every:
            self.sync()

    def close(self) -> None:
        if self._failed:  # the error was raised already; a footer would only fail again
            return
        self._put(self._format.footer(self.n_rows), self.n_rows)
        self.sync()

    def sync(self) -> None:
        try:
            self.out.flush()
        except OSError as e:
            self._fail(e, *self._whole)
        if self.fsync_every:
            try:
                os.fsync(self.out.fileno())
            except OSError as e:  # rows since the last fsync may not be on the disk: drop them
                self._fail(e, *self._synced)
        self._unsynced = 0
        if self.fsync_every:
            self._synced = (self._tell(), self.n_rows)

    def _put(self, text: str, rows_before: int) -> None:
        """Write ``text`` whole, or cut the file back to where it was and raise."""
        if not text:
            return
        start = self._tell()
        try:
            data = memoryview(encode(text))
            while data:  # a raw write may take less than it was given (a full disk does)
                n = self.out.write(data)
                if not n:
                    raise OSError(errno.EIO, "the output took no bytes")
                data = data[n:]
            self.out.flush()
        except OSError as e:
            self._fail(e, start, rows_before)
        self._whole = (self._tell(), self.n_rows)

    def _tell(self) -> int | None:
        try:
            return self.out.tell() if self.out.seekable() else None
        except (OSError, ValueError):
            return None

    def _fail(self, error: OSError, size: int | None, rows: int) -> NoReturn:
        self._failed = True
        self.n_rows = rows
        cut = size is not None
        if size is not None:
            try:
                self.out.truncate(size)
                self.out.seek(size)
            except (OSError, ValueError):
                cut = False
        ends = "ends at its last whole row" if cut else "may end in half a row"
        if self.fmt in RESUMABLE and cut:
            then = "; make room and run again with --resume to go on"
        elif self.fmt == "json":
            then = "; a json list cannot be resumed: make room and run again (or use csv, jsonl)"
        else:
            then = ""
        raise OutputWriteError(
            f"writing {self.name} failed ({first_line(error)}): it {ends} "
            f"({plural(rows, 'row')} written by this command){then}"
        ) from error


class OutputLock:
    """An exclusive lock on an output (a file, or a scan's folder) while one command writes it.

    A second command on the same output, in any process, is refused in one line instead of
    writing every row twice (or deleting the first one's parts). ``flock`` is advisory and
    POSIX only: on Windows, for special files (``/dev/stdout``) and on a file system that
    cannot lock, nothing is locked. The lock belongs to the open file, so it ends with the
    process however the process ends.

    A file output that does not exist is created empty to hold the lock; it is removed again
    at :meth:`release` when nothing opened it for writing (a command that failed first).
    """

    def __init__(self, path: str | os.PathLike, *, folder: bool = False) -> None:
        self.path = Path(path)
        self.folder = folder
        self.fd: int | None = None
        self._created = self._written = False
        if fcntl is not None:
            self._acquire()

    def _acquire(self) -> None:
        for _ in range(5):  # the path can be removed or replaced between open and flock
            try:
                mode = os.stat(self.path).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return  # a device or pipe: nothing to lock
            fd, created = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(
                    f"{self.path} is being written by another fakespotter process; wait for "
                    "it to end or write elsewhere"
                ) from None
            except OSError:  # a file system without locks: go on unlocked
                os.close(fd)
                return
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd, self._created = fd, created
                return
            os.close(fd)
        raise UserError(f"{self.path} keeps being replaced while it is opened; try again")

    def _open(self) -> tuple[int, bool]:
        if self.folder:
            return os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)), False
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            return os.open(self.path, os.O_RDWR), False

    def open_for_writing(self, *, append: bool = False) -> BinaryIO:
        """The locked file, unbuffered, emptied or (``append``) at its end."""
        self._written = True
        if self.fd is None:
            return open(self.path, "ab" if append else "wb", buffering=0)
        f = os.fdopen(os.dup(self.fd), "r+b", buffering=0)  # closing it keeps the lock
        if append:
            f.seek(0, os.SEEK_END)
        else:
            f.truncate(0)
        return f

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self._created and not self._written and os.fstat(self.fd).st_size == 0:
                if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                    os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)  # closing the file ends the lock
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_output(path: str | os.PathLike, *, folder: bool = False) -> OutputLock:
    """:class:`OutputLock` on ``path`` (a context manager; ``release`` ends it)."""
    return OutputLock(path, folder=folder)


def check_overwritable(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    resumable: bool = False,
    ours: Callable[[Path], bool] | None = None,
    option: str = "--overwrite",
) -> None:
    """The one overwrite rule of every command that writes an output (a file or a folder).

    Nothing there, an empty file or an empty folder: go ahead. Something there: refused in
    one line unless ``overwrite`` (the user gave ``option``); the message names ``--resume``
    too when the command can continue this output (``resumable``; a command that resumes does
    not call this). ``ours(path)`` says whether what is there is this program's kind of output:
    when it says no, it is refused even with ``overwrite``, so a file the user made is never
    replaced. Commands call this before they write anything.
    """
    path = Path(path)
    try:
        if path.is_dir():
            if next(path.iterdir(), None) is None:
                return
        elif path.stat().st_size == 0 or not path.is_file():  # empty, or /dev/stdout...
            return
    except FileNotFoundError:
        return
    if ours is not None and not ours(path):
        raise UserError(
            f"{path} exists and is not a fakespotter output; will not overwrite it, even with "
            f"{option} (remove it yourself or write elsewhere)"
        )
    if not overwrite:
        also = " or --resume to continue it" if resumable else ""
        raise UserError(f"{path} exists; pass {option} to replace it{also}")


def check_output(
    path, option: str, overwrite: bool, ours: Callable[[Path], bool], flag: str = "--overwrite"
) -> None:
    """Refuse, before any work (training takes minutes), an output file named by ``option``
    that could not be written at the end, or one that exists (:func:`check_overwritable`:
    without ``overwrite``, given as ``flag``, or when ``ours(path)`` says it is not this kind
    of output)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UserError(f"{option} {path} is a folder; name a file in it")
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a folder"
        raise UserError(f"{option} {path}: {folder} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write into {folder}")
    check_overwritable(target, overwrite=overwrite, ours=ours, option=flag)


def is_result_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` begins as a result file of ``detect`` does (any format), or is empty."""
    try:
        with open(path, "rb") as f:
            head = decode(f.read(4096))
    except OSError:
        return False
    return not head.strip() or _looks_like_output(head)


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

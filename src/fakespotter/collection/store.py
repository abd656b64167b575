"""The scan's output: a folder of Parquet part files that readers take as one table
(``pyarrow.parquet.read_table(folder)``, ``pandas.read_parquet(folder)``).

* Every part holds all the rows of the paths it has, so each (path, face) is in exactly one
  part, and ``part_size`` paths (the last part of a run may hold fewer), whatever the batches
  were; a part is written under a hidden temporary name and renamed into place when whole,
  so a part file that exists is complete.
* ``_fakespotter_scan.json`` says which model began the scan (and the version and command);
  readers skip names that begin with ``_`` or ``.``. Every part carries the same facts in its
  file metadata (key ``fakespotter``).
* Resume reads the paths of the complete parts, deletes half-written ones, and refuses a
  folder begun with another model. Nothing that is not this scan's own is ever deleted: a
  folder holding other files is refused, with or without ``--overwrite``; a folder that holds
  a scan is refused without ``--resume`` or ``--overwrite`` (``results.check_overwritable``,
  every command's rule).
* One scan at a time: the folder is locked (``results.OutputLock``) from before it is read
  until :meth:`PartStore.close`; a second scan into it is refused in one line.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fakespotter.collection.table import SCHEMA, keys_in
from fakespotter.errors import UserError
from fakespotter.results import OutputLock, check_overwritable

MANIFEST = "_fakespotter_scan.json"
PART_GLOB = "part-*.parquet"
_TEMP_PREFIX = ".part-"


class PartStore:
    """Writes tables into ``folder`` as part files of about ``part_size`` paths each."""

    def __init__(
        self,
        folder: str | os.PathLike,
        meta: dict,
        *,
        resume: bool = False,
        overwrite: bool = False,
        part_size: int = 1000,
    ) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.part_size = part_size
        self.done: set[str] = set()  # paths already in complete parts
        self._pending: list[pa.Table] = []
        self._pending_paths = 0
        self._token = secrets.token_hex(4)  # parts of different runs never share a name
        self._next = 0
        self._lock: OutputLock | None = None
        self._open(resume, overwrite)

    @property
    def parts_written(self) -> int:
        """Part files this run has written."""
        return self._next

    # -- opening ---------------------------------------------------------------------------
    def _open(self, resume: bool, overwrite: bool) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file; --output names a folder of part files")
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(folder, folder=True)  # before reading: one scan at a time
        try:
            self._open_locked(resume, overwrite)
        except BaseException:
            self._release()
            raise

    def _open_locked(self, resume: bool, overwrite: bool) -> None:
        folder = self.folder
        entries = sorted(folder.iterdir())
        if not entries:
            self._write_manifest()
            return
        ours = {
            folder / MANIFEST,
            folder / f".{MANIFEST}.tmp",
            *folder.glob(PART_GLOB),
            *folder.glob(_TEMP_PREFIX + "*"),
        }
        if not (folder / MANIFEST).exists():
            raise UserError(
                f"{folder} is not empty and is not a fakespotter scan; "
                "choose a new or empty folder (nothing in it was touched)"
            )
        foreign = [e for e in entries if e not in ours]
        if foreign:
            raise UserError(
                f"{folder} holds files that are not this scan's ({foreign[0].name}, ...); "
                "nothing was touched"
            )
        began = self._read_manifest()
        if resume:
            if began.get("model_sha256") != self.meta["model_sha256"]:
                raise UserError(
                    f"{folder} was begun with another model "
                    f"({str(began.get('model_sha256'))[:16]}, not "
                    f"{self.meta['model_sha256'][:16]}); use that model or a new folder"
                )
            for temp in folder.glob(_TEMP_PREFIX + "*"):
                temp.unlink()  # half-written by a run that stopped
            self.done = self._paths_in_parts()
        elif overwrite:
            for entry in ours:
                entry.unlink(missing_ok=True)
            self._write_manifest()
        else:
            check_overwritable(folder, overwrite=False, resumable=True)  # refuses, in its words

    def _write_manifest(self) -> None:
        _write_atomic(self.folder / MANIFEST, json.dumps(self.meta, indent=2).encode())

    def _read_manifest(self) -> dict:
        try:
            return json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{self.folder / MANIFEST} cannot be read ({e})") from None

    def _paths_in_parts(self) -> set[str]:
        done: set[str] = set()
        for part in sorted(self.folder.glob(PART_GLOB)):
            try:
                table = pq.read_table(part, columns=["path", "path_bytes"])
            except (OSError, pa.ArrowException) as e:
                raise UserError(
                    f"{part} cannot be read ({e}); move it away and --resume again to rescan "
                    "its photos"
                ) from None
            done.update(keys_in(table))
        return done

    # -- writing ---------------------------------------------------------------------------
    def add(self, table: pa.Table) -> int:
        """Rows of whole paths (a scanned batch), written in parts of exactly ``part_size``
        paths as they gather (a table is split between parts at a path's end); returns how
        many paths the table holds."""
        if table.num_rows == 0:
            return 0
        keys = keys_in(table)
        paths = list(dict.fromkeys(keys))  # in order, each once
        n_paths = len(paths)
        while paths:
            room = self.part_size - self._pending_paths
            if len(paths) <= room:
                self._pending.append(table)
                self._pending_paths += len(paths)
                if self._pending_paths >= self.part_size:
                    self.flush()
                break
            first = set(paths[:room])  # every row of these paths: a path is never split
            mask = [key in first for key in keys]
            self._pending.append(table.filter(pa.array(mask)))
            self._pending_paths += room
            self.flush()
            table = table.filter(pa.array([not m for m in mask]))
            keys = [key for key, m in zip(keys, mask, strict=True) if not m]
            paths = paths[room:]
        return n_paths

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).replace_schema_metadata(
            {"fakespotter": json.dumps(self.meta)}
        )
        name = f"part-{self._next:05d}-{self._token}.parquet"
        temp = self.folder / f"{_TEMP_PREFIX}{name}"
        pq.write_table(table, temp)
        _fsync(temp)
        os.replace(temp, self.folder / name)
        self._next += 1
        self._pending, self._pending_paths = [], 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def read_scan(folder: str | os.PathLike) -> pa.Table:
    """Every row of a scan folder as one table (of :data:`SCHEMA`)."""
    parts = sorted(Path(folder).glob(PART_GLOB))
    if not parts:
        return SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(p, schema=SCHEMA) for p in parts)


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    _fsync(temp)
    os.replace(temp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

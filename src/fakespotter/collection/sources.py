"""What ``fakespotter scan SRC...`` reads: folders, files, lists of paths (a text file with one
per line, or a Parquet file with a ``path`` column), and fsspec URLs (``s3://``, ``gs://``,
...) where the matching fsspec package is installed.

A path is kept as the text that names it (Python's ``str`` of a local path, undecodable bytes
as surrogates; the URL itself), so the same photo has the same key in every run, engine and
output format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from fakespotter.errors import UserError, first_line
from fakespotter.faces import MAX_BYTES, MAX_PIXELS, ImageError, check_size, load_image_bytes
from fakespotter.photos import IMAGE_SUFFIXES, iter_files

LIST_SUFFIXES = {".txt", ".lst"}  # one path per line
TABLE_SUFFIXES = {".parquet"}  # a `path` column
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(key: str) -> bool:
    return bool(_URL.match(key))


def list_sources(sources: Iterable[str]) -> list[str]:
    """Every photo the sources name, once each, in the order given (folders sorted)."""
    seen: dict[str, None] = {}
    for source in sources:
        for key in _expand(str(source)):
            seen.setdefault(key, None)
    return list(seen)


def _expand(source: str) -> Iterator[str]:
    suffix = Path(source.rstrip("/")).suffix.lower()
    if suffix in LIST_SUFFIXES | TABLE_SUFFIXES:
        yield from _listed(source, suffix)
    elif is_url(source):
        yield from _url_files(source)
    else:
        yield from map(str, iter_files([source], suffixes=IMAGE_SUFFIXES))


def _listed(source: str, suffix: str) -> Iterator[str]:
    try:
        if suffix in TABLE_SUFFIXES:
            import pyarrow.parquet as pq

            table = pq.read_table(_open(source), columns=None)
            if "path" not in table.column_names:
                raise UserError(f"{source}: a list of paths needs a 'path' column")
            paths = table.column("path").to_pylist()
            raw = (
                table.column("path_bytes").to_pylist()
                if "path_bytes" in table.column_names
                else None
            )
            for i, path in enumerate(paths):
                if raw is not None and raw[i] is not None:
                    yield raw[i].decode("utf-8", "surrogateescape")
                elif path:
                    yield path
            return
        with _open(source) as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except UserError:
        raise
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the list {source}: {first_line(e)}") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _open(source: str):
    if is_url(source):
        return _filesystem(source)[0].open(source, "rb")
    return open(source, "rb")


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise UserError(f"{url}: reading URLs needs fsspec (pip install fsspec)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs
        raise UserError(f"{url}: {first_line(e)}") from None


def _url_files(url: str) -> Iterator[str]:
    fs, root = _filesystem(url)
    try:
        if not fs.isdir(root):
            yield url
            return
        found = sorted(fs.find(root))
    except OSError as e:
        raise UserError(f"cannot list {url}: {first_line(e)}") from None
    for path in found:
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            yield fs.unstrip_protocol(path)


def read_url_image(url: str, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES):
    """The photo at an fsspec URL as H x W x 3 uint8; ImageError with the reason if not."""
    try:
        fs, path = _filesystem(url)
        size = fs.size(path)
        if size is not None:  # refused before it is downloaded
            check_size(size, max_bytes)
        with fs.open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except UserError as e:
        raise ImageError(str(e)) from None
    except OSError as e:
        raise ImageError(f"cannot read ({first_line(e)})") from None
    return load_image_bytes(data, max_pixels=max_pixels, max_bytes=max_bytes)

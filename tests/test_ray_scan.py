"""`fakespotter scan --engine ray` on a simulated two-node cluster and on the cluster the command
starts itself: the same rows as the local engine and `detect`, exactly once each, through a
killed worker, a stopped driver and workers with an empty weights cache and no network. Each
cluster costs seconds to start, so the faults share one. Every test has a hard timeout, so a
hang fails fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
pytest.importorskip("ray.data")

from test_scan_collection import (  # noqa: E402
    assert_same_rows,
    detect_rows,
    scan_rows,
    write_mixed_folder,
)

from fakespotter.collection import scan  # noqa: E402
from fakespotter.collection.ray_engine import EXIT_ONCE_ENV  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The mixed folder every test scans (one folder, so rows compare by path)."""
    return write_mixed_folder(tmp_path_factory.mktemp("ray") / "photos")


@pytest.fixture(scope="module")
def local_rows(photos, weight_file) -> dict:
    """The local engine's rows of ``photos``, the reference of every Ray scan here (the local
    engine gives detect's rows: test_scan_collection)."""
    for name in ("sface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    out = photos.parent / "local"
    scan([str(photos)], out, batch_size=2)
    return scan_rows(out)


def test_two_nodes_with_a_dying_worker_and_no_cache_give_detects_rows_once_each(
    tmp_path, photos, local_rows, monkeypatch
):
    """One cluster of two nodes, whose workers have an empty weights cache and no network to
    fill it (the driver ships the weights) and one of which dies mid-scan (its batch is
    retried): the scan's rows are detect's and the local engine's, each once. Then a worker
    with another fakespotter version stops a scan, with the reason."""
    from ray.cluster_utils import Cluster

    from fakespotter.collection import ray_engine
    from fakespotter.errors import UserError

    marker = tmp_path / "died"  # the first batch that finds no such file kills its worker
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    dead = "http://127.0.0.1:9"  # nothing listens: any download fails at once
    env = {
        EXIT_ONCE_ENV: str(marker),
        "FAKESPOTTER_CACHE": str(empty),
        "PIP_INDEX_URL": dead,
        "PIP_NO_INDEX": "1",
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
    }
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": env}, logging_level="ERROR")
        summary = scan([str(photos)], tmp_path / "ray", engine="ray", batch_size=1, workers=2)
        assert marker.exists(), "no worker died: the test proved nothing"
        assert not any(empty.iterdir()), "a worker used the (empty) cache it was given"
        assert summary["files"] == 6 and summary["faces"] == 4
        got = scan_rows(tmp_path / "ray")
        assert_same_rows(got, detect_rows(sorted(photos.iterdir())))
        assert_same_rows(got, local_rows)

        real_ship = ray_engine.ship
        monkeypatch.setattr(
            ray_engine, "ship", lambda *a: {**real_ship(*a), "version": "0.0-other"}
        )
        with pytest.raises(UserError, match="install the same version on every node"):
            scan([str(photos)], tmp_path / "other", engine="ray", workers=1)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_resume_after_the_driver_was_stopped(tmp_path, local_rows, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in photos.iterdir():  # the mixed photos, and more, so the driver is stopped
        (folder / source.name).write_bytes(source.read_bytes())  # with work left
    for i in range(6):
        (folder / f"copy-{i}.jpg").write_bytes((folder / "astronaut.jpg").read_bytes())
    out = tmp_path / "ray"
    command = [
        str(Path(sys.executable).parent / "fakespotter"), "scan", str(folder), "--output", str(out),
        "--engine", "ray", "--workers", "1", "--batch-size", "1", "--part-size", "1",
    ]  # fmt: skip
    driver = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the cluster it started
    driver.wait()
    kept = len(list(out.glob("part-*.parquet")))
    assert 2 <= kept < 12, "the driver was not stopped mid-way"
    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=180, check=False
    )
    assert resumed.returncode == 3, resumed.stderr  # 3: the photos without a face or image
    assert f"({kept} already in" in resumed.stderr
    # each photo's rows are the local scan's rows of the photo it copies
    want = {(str(folder / Path(path).name), face): row for (path, face), row in local_rows.items()}
    astronaut = {k: v for k, v in want.items() if Path(k[0]).name == "astronaut.jpg"}
    for i in range(6):
        want.update({(str(folder / f"copy-{i}.jpg"), k[1]): v for k, v in astronaut.items()})
    assert_same_rows(scan_rows(out), want)

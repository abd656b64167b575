"""`fakespotter scan --engine ray` on a local cluster and on a simulated two-node cluster: the
same rows as the local engine and `detect`, exactly once each, through a killed worker, a
stopped driver and workers with an empty weights cache and no network. Every test has a hard
timeout, so a hang fails fast."""

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


@pytest.fixture
def shipped_weights(weight_file):
    for name in ("sface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)


@pytest.fixture
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_ray_engine_gives_the_local_engines_and_detects_rows(
    tmp_path, shipped_weights, local_cluster
):
    folder = write_mixed_folder(tmp_path / "photos")
    want = detect_rows(sorted(folder.iterdir()))
    scan([str(folder)], tmp_path / "local", batch_size=2)
    summary = scan([str(folder)], tmp_path / "ray", engine="ray", batch_size=2, workers=2)
    assert summary["files"] == 6 and summary["faces"] == 4
    got = scan_rows(tmp_path / "ray")
    assert_same_rows(got, want)
    assert_same_rows(got, scan_rows(tmp_path / "local"))


def test_two_node_cluster(tmp_path, shipped_weights):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        folder = write_mixed_folder(tmp_path / "photos")
        scan([str(folder)], tmp_path / "ray", engine="ray", batch_size=1, workers=2)
        scan([str(folder)], tmp_path / "local", batch_size=1)
        assert_same_rows(scan_rows(tmp_path / "ray"), scan_rows(tmp_path / "local"))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_worker_that_dies_loses_and_duplicates_nothing(tmp_path, shipped_weights):
    marker = tmp_path / "died"  # the first batch that finds no such file kills its worker
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {EXIT_ONCE_ENV: str(marker)}},
        logging_level="ERROR",
    )
    try:
        folder = write_mixed_folder(tmp_path / "photos")
        scan([str(folder)], tmp_path / "ray", engine="ray", batch_size=1, workers=1)
    finally:
        ray.shutdown()
    assert marker.exists(), "no worker died: the test proved nothing"
    scan([str(folder)], tmp_path / "local", batch_size=1)
    assert_same_rows(scan_rows(tmp_path / "ray"), scan_rows(tmp_path / "local"))


def test_workers_with_an_empty_cache_and_no_network(tmp_path, shipped_weights):
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    dead = "http://127.0.0.1:9"  # nothing listens: any download fails at once
    env = {
        "FAKESPOTTER_CACHE": str(empty),
        "PIP_INDEX_URL": dead,
        "PIP_NO_INDEX": "1",
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
    }
    ray.init(
        num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, logging_level="ERROR"
    )
    try:
        folder = write_mixed_folder(tmp_path / "photos")
        scan([str(folder)], tmp_path / "ray", engine="ray", batch_size=2, workers=2)
    finally:
        ray.shutdown()
    assert not any(empty.iterdir()), "a worker used the (empty) cache it was given"
    scan([str(folder)], tmp_path / "local", batch_size=2)
    assert_same_rows(scan_rows(tmp_path / "ray"), scan_rows(tmp_path / "local"))


def test_resume_after_the_driver_was_stopped(tmp_path, shipped_weights):
    folder = write_mixed_folder(tmp_path / "photos")
    for i in range(6):  # more photos, so the driver is stopped with work left
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
    scan([str(folder)], tmp_path / "local", batch_size=1)
    assert_same_rows(scan_rows(out), scan_rows(tmp_path / "local"))


def test_a_worker_with_another_version_stops_the_scan_with_its_reason(
    tmp_path, shipped_weights, local_cluster, monkeypatch
):
    from fakespotter.collection import ray_engine
    from fakespotter.errors import UserError

    real_ship = ray_engine.ship
    monkeypatch.setattr(ray_engine, "ship", lambda *a: {**real_ship(*a), "version": "0.0-other"})
    folder = write_mixed_folder(tmp_path / "photos")
    with pytest.raises(UserError, match="install the same version on every node"):
        scan([str(folder)], tmp_path / "ray", engine="ray", workers=1)

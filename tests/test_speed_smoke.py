"""Smoke test of benchmarks/speed.py: it runs and reports the documented numbers (no timing limits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_speed_benchmark_quick_json(weight_file, tmp_path):
    for name in ("dlib", "sface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "yunet"):
        weight_file(name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--quick",
            "--json",
            "--backbones",
            "dlib",
            "--synthetic",
            "--n",
            "4",
            "--reps",
            "1",
            "--threads",
            "1",
            "--busy",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)  # progress went to stderr, stdout is pure JSON
    assert set(data) == {"dlib", "end_to_end", "machine", "detectors"}

    dlib = data["dlib"]
    assert dlib["batch"] == 32 and dlib["batch1"]["batch"] == 1
    for row in (dlib, dlib["batch1"]):
        for key in ("plain_ms", "coverage_ms", "ratio", "layer_ms", "layer_ratio"):
            assert row[key] > 0, key
        assert abs(row["ratio"] - row["coverage_ms"] / row["plain_ms"]) < 1e-9
        # every variant by both counting engines; the headline keys are the machine's engine
        assert set(row["variants"]) == {"channel", "layer", "kmultisection-channel"}
        for v in row["variants"].values():
            assert set(v) == {"kernel_ms", "kernel_ratio", "torch_ms", "torch_ratio"}
            assert abs(v["kernel_ratio"] - v["kernel_ms"] / row["plain_ms"]) < 1e-9
        used = "torch" if data["machine"]["counting"].startswith("torch") else "kernel"
        assert row["coverage_ms"] == row["variants"]["channel"][f"{used}_ms"]
        assert (
            row["default_variant_ratio"]
            == row["variants"]["kmultisection-channel"][f"{used}_ratio"]
        )
    assert dlib["fit_ms"] > 0 and dlib["fit_ratio"] > 0
    alone = dlib["counting_alone_ms"]
    assert alone["kernel"] > 0 and alone["torch"] > 0
    assert abs(dlib["counting_alone_speedup"] - alone["torch"] / alone["kernel"]) < 1e-9

    e2e = data["end_to_end"]
    assert e2e["n"] == 4 and ("throwaway" in e2e["model"] or "default" in e2e["model"])
    # the summary keys, each the run it names
    assert e2e["detect_faces_per_s"] == e2e["detect"]["faces_per_s"]
    assert e2e["aligned_faces_per_s"] == e2e["aligned"]["faces_per_s"]
    assert e2e["busy_detect_faces_per_s"] == e2e["busy_detect"]["faces_per_s"]
    # each row against the same run's network alone (the model's backbone at batch 32)
    alone = e2e["network_alone"]
    assert alone["coverage_faces_per_s"] > 0 and alone["plain_faces_per_s"] > 0
    assert alone["batch"] == 32
    for mode in ("detect", "aligned", "busy_detect"):
        row = e2e[mode]
        assert (
            abs(row["of_network_alone"] - row["faces_per_s"] / alone["coverage_faces_per_s"]) < 1e-9
        )
    startup = e2e["single_photo"]
    assert startup["photo"] == "astronaut.jpg" and startup["warmup"] is False  # --quick
    assert e2e["single_photo_s"] == startup["seconds"] == startup["all_seconds"][0] > 0
    assert len(startup["all_seconds"]) == 1
    # faces found by the model's detector, and by every other registered one beside it
    from fakespotter.faces.registry import FACE_DETECTORS

    others = [f"detect_{name}" for name in FACE_DETECTORS if name != e2e["face_detector"]]
    # every registered detector, and MTCNN with its old pooling as the baseline row (#29)
    assert others and set(data["detectors"]) == {*FACE_DETECTORS, "mtcnn-nchw-pooling"}
    for name, row in data["detectors"].items():
        assert row["photos"] == 4 and row["found_rate"] == 1.0, name  # her face, every time
        assert row["ms_per_photo"] > 0 and row["ms_per_photo_mean"] > 0
    for mode in ("detect", "aligned", "busy_detect", *others):
        run = e2e[mode]
        assert run["images"] == 4 and run["errors"] == 0
        assert run["faces"] >= 4  # every astronaut copy has her face; aligned gives one per image
        for key in (
            "seconds",
            "images_per_s",
            "faces_per_s",
            "ms_per_image",
            "rss_mb_half",
            "rss_mb_end",
            "peak_rss_mb",
        ):
            assert run[key] > 0, (mode, key)
    assert e2e["aligned"]["faces"] == 4

    machine = data["machine"]
    assert machine["threads"] >= 1 and len(machine["load_before"]) == 3

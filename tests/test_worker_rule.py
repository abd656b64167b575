"""How many face-finding worker processes a command starts (issue #29: a worker must never
make a run slower than none): none for a few files, none for aligned crops, else one per core
beyond the first, at most 4. The measurements behind the rule are in docs/speed.md."""

from __future__ import annotations

import pytest

from fakespotter import photos


@pytest.mark.parametrize("cores", [1, 2, 4, 16])
def test_the_worker_rule(monkeypatch, cores):
    monkeypatch.setattr(photos.os, "cpu_count", lambda: cores)
    assert photos.default_workers(10) == 0  # starting one costs more than a few files
    assert photos.default_workers(1000, aligned=True) == 0  # crops are cheap to read
    assert photos.default_workers(1000) == min(4, cores - 1)


def test_detect_on_aligned_crops_starts_no_worker(monkeypatch, tmp_path, tiny_model):
    from click.testing import CliRunner
    from conftest import write_noise_faces

    from fakespotter.cli import main

    asked = []
    real_find = photos.find_faces

    def find_faces(*args, workers=0, **kwargs):
        asked.append(workers)
        return real_find(*args, workers=workers, **kwargs)

    monkeypatch.setattr(photos, "find_faces", find_faces)
    monkeypatch.setattr(photos.os, "cpu_count", lambda: 8)
    folder = write_noise_faces(tmp_path / "crops", 70, smooth=True, seed=1)
    args = ["detect", str(folder), "--aligned", "--model", str(tiny_model)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 4), result.output
    assert asked == [0]  # 70 files on 8 cores: photos would get workers, crops get none

"""Scan collections of photos into a Parquet folder, on this machine or on a Ray cluster.

    fakespotter.scan(["photos/"], "results.parquet/")                  # local engine
    fakespotter.scan(["s3://bucket/photos/"], "out/", engine="ray")   # the [ray] extra

Modules: ``sources`` (what SRC names), ``table`` (the shared core: paths -> Arrow rows),
``scanner`` (a worker's loaded model), ``store`` (the part files, resume), ``local`` and
``ray_engine`` (the two built-in engines; another registers with ``register_engine``).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakespotter.errors import UserError


@dataclass(frozen=True)
class ScanJob:
    """What an engine is given: the photos still to scan (``todo``, in order), the model file,
    the options a worker builds its :class:`~fakespotter.collection.scanner.Scanner` from
    (``scanner_options``, the model path included), and how the user asked to spread the work.
    An engine scans them, as batches of ``batch_size`` through ``table.scan_batch``, and
    hands each batch's table whole to ``on_table`` on the driver (``store.PartStore`` owns
    the part files and resume)."""

    todo: list[str]
    model_path: Path
    backbone: str
    face_detector: str
    scanner_options: dict
    workers: int | None
    cpus_per_worker: float
    gpus_per_worker: float
    batch_size: int
    address: str | None
    warn: Callable[[str], None]


@dataclass(frozen=True)
class Engine:
    """A scan engine: ``run(job, on_table)``, and ``check()`` that refuses, before anything is
    written, a machine that cannot run it (a missing extra)."""

    run: Callable[[ScanJob, Callable[[Any], None]], None]
    check: Callable[[], None] = lambda: None


def _run_local(job: ScanJob, on_table) -> None:
    from fakespotter.collection import local

    workers = job.workers
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = 1 if len(job.todo) < 64 else max(1, int(cpus // job.cpus_per_worker))
    size = job.batch_size
    batches = [job.todo[i : i + size] for i in range(0, len(job.todo), size)]
    options = {**job.scanner_options, "threads": max(1, int(job.cpus_per_worker))}
    local.run(batches, on_table, workers=workers, scanner_options=options, warn=job.warn)


def _run_ray(job: ScanJob, on_table) -> None:
    from fakespotter.collection import ray_engine

    ray_engine.run(
        job.todo, on_table, model_path=job.model_path, backbone=job.backbone,
        face_detector=job.face_detector, address=job.address, workers=job.workers,
        cpus_per_worker=job.cpus_per_worker, gpus_per_worker=job.gpus_per_worker,
        batch_size=job.batch_size, scanner_options={**job.scanner_options, "model": None},
    )  # fmt: skip


def _require_ray() -> None:
    from fakespotter.collection.ray_engine import require_ray

    require_ray()


# name -> engine, in registration order; `fakespotter scan --engine` lists them
ENGINES: dict[str, Engine] = {
    "local": Engine(_run_local),  # worker processes on this machine
    "ray": Engine(_run_ray, check=_require_ray),  # an actor pool on a Ray cluster
}


def register_engine(name: str, engine: Engine, *, replace: bool = False) -> Engine:
    """Make ``engine`` available as ``scan(engine=name)`` and ``scan --engine name``."""
    if name in ENGINES and not replace:
        raise ValueError(f"a scan engine named {name!r} is already registered")
    ENGINES[name] = engine
    return engine


def scan(
    sources,
    output: str | os.PathLike,
    *,
    engine: str = "local",
    model: str | os.PathLike | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 16,
    aligned: bool = False,
    threshold: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    part_size: int = 1000,
    address: str | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
    command: str | None = None,
) -> dict:
    """Score every face of every photo ``sources`` name into the folder ``output``; returns
    a summary (files, already done, faces, fake, uncertain, errors, parts, seconds).

    ``sources``: folders, files, text or Parquet lists of paths, fsspec URLs. ``workers``:
    processes (local) or actors (Ray), each with ``cpus_per_worker`` CPUs [default: every
    CPU; local runs in this process under 64 photos]. ``part_size``: photos per part file
    (the last may hold fewer), the unit that a stopped scan keeps. An existing scan in
    ``output`` is refused unless ``resume`` or ``overwrite``; a scan that another process is
    writing is refused.
    """
    from tqdm import tqdm

    from fakespotter.collection.sources import list_sources
    from fakespotter.persistence import default_model_path, load_model
    from fakespotter.version import __version__
    from fakespotter.weights import sha256_of

    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: choose one")
    ENGINES[engine].check()  # before anything is written
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    start = time.perf_counter()
    model_path = Path(model) if model is not None else default_model_path()
    if not model_path.exists():  # a FIFO or device: load_model says it is no regular file
        raise UserError(f"model file not found: {model_path}")
    detector = load_model(model_path)  # a bad model fails here, before any output is made
    meta = {
        "fakespotter_version": __version__,
        "model_sha256": sha256_of(model_path),
        "backbone": getattr(detector.backbone, "name", detector.backbone),
        "variant": detector.variant,
        "engine": engine,
        "command": command or shlex.join(["fakespotter.scan", *map(str, sources)]),
    }
    from fakespotter.collection.store import PartStore

    keys = list_sources(sources)
    store = PartStore(
        output, meta, resume=resume, overwrite=overwrite, part_size=part_size
    )  # after listing: a source that cannot be listed leaves no folder behind
    todo = [k for k in keys if k not in store.done]
    summary: dict[str, Any] = {
        "files": len(keys),
        "already_done": len(keys) - len(todo),
        "faces": 0,
        "fake": 0,
        "uncertain": 0,
        "errors": 0,
    }
    bar = tqdm(
        total=len(todo), desc=f"scan ({engine})", unit="img", disable=not progress,
        file=sys.stderr, delay=1.0, smoothing=0.05,
    )  # fmt: skip

    def on_table(table) -> None:
        photos = store.add(table)
        labels = table.column("label").to_pylist()
        errors = table.column("error").to_pylist()
        summary["faces"] += sum(label is not None for label in labels)
        summary["fake"] += labels.count("fake")
        summary["uncertain"] += labels.count("uncertain")
        summary["errors"] += sum(e is not None for e in errors)
        bar.update(photos)

    scanner_options = {
        "aligned": aligned,
        "threshold": threshold,
        "batch_size": max(batch_size, 32),  # faces scored together, across photos
        "max_pixels": max_pixels,
        "max_bytes": max_bytes,
        "device": "cuda" if gpus_per_worker else "cpu",
    }
    job = ScanJob(
        todo=todo, model_path=model_path, backbone=meta["backbone"],
        face_detector=detector.face_detector,
        scanner_options={**scanner_options, "model": model_path}, workers=workers,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, batch_size=batch_size,
        address=address, warn=lambda m: print(f"fakespotter: {m}", file=sys.stderr),
    )  # fmt: skip
    try:
        if todo:
            ENGINES[engine].run(job, on_table)
    finally:
        store.close()  # what was scanned is kept, however the scan ended
        bar.close()
    summary["parts"] = store.parts_written
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["output"] = str(output)
    return summary


__all__ = ["ENGINES", "Engine", "ScanJob", "register_engine", "scan"]

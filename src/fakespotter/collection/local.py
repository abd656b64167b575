"""The local engine of `fakespotter scan`: batches of paths scanned in this process, or in
worker processes on this machine that each load the model once."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pyarrow as pa

from fakespotter.collection.scanner import Scanner
from fakespotter.worker_exit import die_with_parent, on_main_thread


def run(
    batches: Sequence[Sequence[str]],
    on_table: Callable[[pa.Table], None],
    *,
    workers: int,
    scanner_options: dict,
    warn: Callable[[str], None],
) -> None:
    """Scan ``batches`` in order, handing each batch's table to ``on_table``."""
    if workers <= 1:
        scanner = Scanner(**scanner_options)
        for batch in batches:
            on_table(scanner(batch))
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(scanner_options, os.getpid(), on_main_thread()),
    )
    pending: deque = deque()
    broken = False
    local: Scanner | None = None

    def finish_oldest() -> None:
        nonlocal broken, local
        batch, future = pending.popleft()
        if not broken:
            try:
                on_table(future.result())
                return
            except BrokenProcessPool:
                broken = True  # a worker died (killed, out of memory): go on in this process
                warn("a worker process died; going on in this process")
        local = local or Scanner(**scanner_options)
        on_table(local(batch))

    try:
        for batch in batches:
            pending.append((batch, None if broken else pool.submit(_worker_scan, batch)))
            if len(pending) >= 2 * workers:
                finish_oldest()
        while pending:
            finish_oldest()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_worker: dict = {}


def _start_worker(options: dict, parent_pid: int, parent_on_main_thread: bool) -> None:
    die_with_parent(parent_pid, parent_on_main_thread)  # a killed driver takes its workers
    _worker["scanner"] = Scanner(**options)


def _worker_scan(batch: Sequence[str]) -> pa.Table:
    return _worker["scanner"](batch)

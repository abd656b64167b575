"""The Ray engine of `fakespotter scan` (the ``ray`` extra: :data:`RAY_INSTALL`), and
:class:`FakeSpotterPredictor` for people with their own Ray Data pipeline.

Shape of a run: the driver lists the photos and starts from that list (``from_items``: a job
that begins with a read step can hang when workers take every CPU, ray-project/ray#44687); an
actor pool of :class:`FakeSpotterPredictor` (one model load per worker) turns batches of paths
into tables with :func:`fakespotter.collection.table.scan_batch`, the same core as the local
engine; the driver writes each table it receives into the part store. A worker that dies has
its batch retried by Ray; only a finished batch's output ever reaches the driver, so every
(path, face) is written once. Failed blocks are never ignored (``max_errored_blocks = 0``:
ignoring them hangs, ray-project/ray#62746).

Workers need no network and no weights cache: the driver sends the model file and every
weight file it needs through Ray's object store with their sha256; each worker checks the
hashes and its fakespotter version against the driver's and stops with a clear message on a
mismatch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from fakespotter.collection.scanner import Scanner
from fakespotter.errors import UserError, first_line, install_extra
from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR

# Tests set this to a file name: the first worker batch that finds no such file creates it
# and kills its own process, as a crashed worker would (fault injection; see tests/test_ray_scan.py).
EXIT_ONCE_ENV = "FAKESPOTTER_TEST_WORKER_EXIT_ONCE"


RAY_INSTALL = install_extra("ray")


class WorkerMismatch(RuntimeError):
    """A worker cannot run the driver's scan (another fakespotter version, changed files)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ship(model_path: Path, backbone: str, face_detector: str = DEFAULT_FACE_DETECTOR) -> dict:
    """The model file and the weight files it needs (its ``backbone``'s, its face
    detector's, and MTCNN's for the aligned-face check), in Ray's object store, with
    sha256s."""
    import ray

    from fakespotter.backbones.registry import get_backbone
    from fakespotter.faces.registry import get_face_detector
    from fakespotter.version import __version__
    from fakespotter.weights import fetch

    files = []
    detectors = dict.fromkeys([face_detector, "mtcnn"])  # each once, in order
    weights = {  # each file once: a detector may be made of another's files
        (w.name, w.filename): w
        for w in (
            *get_backbone(backbone).weight_files,
            *(w for name in detectors for w in get_face_detector(name).weight_files),
        )
    }
    for weight in weights.values():
        data = fetch(weight, progress=False).read_bytes()
        files.append(
            {"name": weight.name, "filename": weight.filename, "sha256": _sha256(data)}
            | {"data": ray.put(data)}
        )
    model = Path(model_path).read_bytes()
    return {
        "version": __version__,
        "model": {"sha256": _sha256(model), "data": ray.put(model)},
        "weights": files,
    }


def unpack(shipped: dict, get: Callable = None) -> Path:  # type: ignore[assignment]
    """On a worker: check the shipped files and the version, put the weights in a private
    cache (``$FAKESPOTTER_CACHE`` of this process) and return the model file's path."""
    from fakespotter.version import __version__
    from fakespotter.weights import CACHE_ENV, install

    if get is None:
        import ray

        get = ray.get
    if shipped["version"] != __version__:
        raise WorkerMismatch(
            f"this worker has fakespotter {__version__}, the driver {shipped['version']}: "
            "install the same version on every node"
        )
    files = [(f, get(f["data"])) for f in shipped["weights"]]
    for f, data in files:
        if _sha256(data) != f["sha256"]:
            raise WorkerMismatch(f"weight file {f['filename']} changed on its way to the worker")
    model = get(shipped["model"]["data"])
    if _sha256(model) != shipped["model"]["sha256"]:
        raise WorkerMismatch("the model file changed on its way to the worker")
    # everything checked: only now does this process get its private cache
    cache = Path(tempfile.mkdtemp(prefix="fakespotter-worker-"))
    os.environ[CACHE_ENV] = str(cache)  # this worker process only
    for f, data in files:
        incoming = cache / f".incoming-{f['filename']}"
        incoming.write_bytes(data)
        install(incoming, _weight_file(f["name"], f["filename"]))
        incoming.unlink()
    path = cache / "model.safetensors"
    path.write_bytes(model)
    return path


def _weight_file(name: str, filename: str):
    from fakespotter.backbones.registry import all_weight_files

    for files in all_weight_files().values():
        for weight in files:
            if weight.name == name and weight.filename == filename:
                return weight
    raise WorkerMismatch(f"this worker's fakespotter does not know the weight file {filename}")


class FakeSpotterPredictor:
    """A Ray Data callable class: batches with a ``path`` column (text) in, rows of
    :data:`fakespotter.collection.table.SCHEMA` out, the model loaded once per actor::

        ds = ray.data.from_items([{"path": p} for p in paths])
        rows = ds.map_batches(FakeSpotterPredictor, fn_constructor_kwargs={"model": "m.safetensors"},
                              batch_size=16, batch_format="pyarrow", concurrency=4, num_cpus=1)

    ``model``: a model file every worker can read (default: the shipped one); the scan engine
    passes ``shipped`` (:func:`ship`) instead. Other keywords go to :class:`Scanner`; torch
    threads default to the CPUs Ray gave the actor.
    """

    def __init__(self, model=None, *, shipped: dict | None = None, threads=None, **options):
        if shipped is not None:
            model = unpack(shipped)
        if threads is None:
            threads = _assigned_cpus()
        self.scanner = Scanner(model, threads=threads, **options)

    def __call__(self, batch) -> pa.Table:
        _exit_once_if_asked()
        return self.scanner(_keys(batch))


def _keys(batch) -> list[str]:
    table = batch if isinstance(batch, pa.Table) else pa.table(batch)
    if "key" in table.column_names:  # the engine's: exact bytes of each name
        return [k.decode("utf-8", "surrogateescape") for k in table.column("key").to_pylist()]
    return [str(p) for p in table.column("path").to_pylist()]


def _assigned_cpus() -> int:
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # not in a Ray worker
        return 1
    return max(1, int(cpus))


def _exit_once_if_asked() -> None:
    marker = os.environ.get(EXIT_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


def require_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(f"--engine ray needs Ray Data, the 'ray' extra: {RAY_INSTALL}") from None


def run(
    keys: Sequence[str],
    on_table: Callable[[pa.Table], None],
    *,
    model_path: Path,
    backbone: str,
    face_detector: str = DEFAULT_FACE_DETECTOR,
    address: str | None,
    workers: int | None,
    cpus_per_worker: float,
    gpus_per_worker: float,
    batch_size: int,
    scanner_options: dict,
) -> None:
    """Scan ``keys`` on a Ray cluster (started here when none is connected), handing each
    finished batch's table to ``on_table`` (in the order batches finish)."""
    require_ray()
    import ray
    import ray.data

    started = False
    if not ray.is_initialized():
        try:
            # no address: $RAY_ADDRESS, else a new cluster here ("local": never a stale one
            # left on this machine, which Ray's own default would join)
            ray.init(
                address=address or os.environ.get("RAY_ADDRESS") or "local",
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {address}: {first_line(e)}") from None
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the scan's own bar counts photos
        # Ray Data's per-run INFO lines (execution plan, "finished") would bury the summary
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context.max_errored_blocks = 0
        if workers is None:
            cpus = ray.cluster_resources().get("CPU", 1)
            workers = max(1, int(cpus // max(cpus_per_worker, 1e-9)))
        shipped = ship(model_path, backbone, face_detector)
        items = [{"key": k.encode("utf-8", "surrogateescape")} for k in keys]
        # a block per batch (capped), and at least one per worker so that every actor has work
        blocks = min(len(items), max(workers, min(len(items) // batch_size + 1, 4 * workers * 64)))
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            FakeSpotterPredictor,
            fn_constructor_kwargs={"shipped": shipped, **scanner_options},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
        )  # Ray Data's actor pools replace a worker that dies and retry its batch by default
        try:
            for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                on_table(table)
        except ray.exceptions.RayError as e:
            mismatch = _mismatch(e)
            if mismatch:
                raise UserError(mismatch) from None
            raise
    finally:
        if started:
            ray.shutdown()


def _mismatch(error: BaseException) -> str | None:
    """The worker's own message when it stopped on a mismatch, however Ray wrapped it."""
    text = str(error)
    marker = "WorkerMismatch: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0]
    return None

"""Photos in, rows out: walk paths, load each image, crop its faces, score them in batches.

Every input file gives at least one row: one per face found, or one row whose ``error`` says
why there is no score (unreadable file, no face found, a folder that could not be listed, a
file that vanished between listing and reading). Nothing is silently dropped, and nothing a
file contains can stop the scan: a failure while reading or cropping one file is that file's
error row.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fakespotter.errors import first_line
from fakespotter.faces import ImageError, load_image
from fakespotter.faces.io import MAX_BYTES, MAX_PIXELS
from fakespotter.faces.pipeline import FaceCrop, FaceCropper
from fakespotter.rows import NO_FACE, Row, face_rows
from fakespotter.video import VIDEO_SUFFIXES, VideoError, scan_video
from fakespotter.worker_exit import die_with_parent, on_main_thread

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
SCANNED_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def iter_files(
    paths: Iterable[str | os.PathLike], suffixes: set[str] = SCANNED_SUFFIXES
) -> Iterator[Path]:
    """Files named directly, and files with these ``suffixes`` (images and videos by
    default) under folders (recursively, sorted).

    A folder that cannot be listed is yielded itself, so that it gets an error row instead
    of vanishing from the results; symlinked folders are not followed (no loops).
    """
    for path in map(Path, paths):
        if path.is_dir():
            unlisted: list[OSError] = []
            for root, dirs, files in os.walk(path, onerror=unlisted.append):
                while unlisted:
                    yield Path(unlisted.pop(0).filename)
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in suffixes:
                        yield Path(root) / name
            for error in unlisted:
                yield Path(error.filename)
        else:
            yield path  # missing or odd paths are reported by the loader, not skipped


@dataclass
class Faces:
    """One input file with its aligned faces, or the reason it has none."""

    path: Path | str  # str: a URL
    faces: list[FaceCrop]
    error: str | None = None


def read_faces(
    cropper: FaceCropper,
    path: Path | str,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    alter: Callable[[np.ndarray], np.ndarray] | None = None,
    load: Callable[..., np.ndarray] | None = None,
) -> Faces:
    """The faces of one file, or the one-line reason there are none; never raises for a bad file.

    ``alter`` changes the decoded photo before face finding (training-time augmentation).
    ``load`` reads ``path`` in place of :func:`load_image` (e.g. a URL's bytes); it raises
    ImageError for a file it cannot give.
    """
    try:
        image = (load or load_image)(path, max_pixels=max_pixels, max_bytes=max_bytes)
    except ImageError as e:
        return Faces(path, [], (load is None and _folder_reason(Path(path))) or str(e))
    except MemoryError:
        return Faces(path, [], "not enough memory to decode the image")
    try:
        if alter is not None:
            image = alter(image)
        faces = cropper(image)
    except MemoryError:
        return Faces(path, [], "not enough memory to find faces in the image")
    except (ValueError, RuntimeError, IndexError, ArithmeticError) as e:
        # an image the face finder cannot handle (odd shape, degenerate landmarks) must not
        # end the scan of all the others
        return Faces(path, [], f"face detection failed ({first_line(e)})")
    return Faces(path, faces, None if faces else NO_FACE)


def find_faces(
    cropper: FaceCropper,
    files: Iterable[Path],
    *,
    progress: bool = False,
    total: int | None = None,
    desc: str = "faces",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    workers: int = 0,
    alter_of: Callable[[int], Callable | None] | None = None,
) -> Iterator[Faces]:
    """``read_faces`` for each file, in order; ``alter_of(i)`` gives file i's ``alter``
    (picklable when there are workers).

    ``workers > 0`` decodes, detects and aligns in that many worker processes while the
    caller runs the backbone on earlier faces; at most ``IN_FLIGHT_PER_WORKER`` files per
    worker are ahead of the caller, so memory stays flat however many files there are.
    """
    files = tqdm(
        files,
        total=total,
        desc=desc,
        unit="img",
        disable=not progress,
        file=sys.stderr,
        delay=1.0,
        leave=False,
        smoothing=0.05,
    )

    def alter(i: int):
        return None if alter_of is None else alter_of(i)

    if workers <= 0:
        for i, path in enumerate(files):
            yield read_faces(
                cropper, path, max_pixels=max_pixels, max_bytes=max_bytes, alter=alter(i)
            )
        return
    config = (
        cropper.size, cropper.template, cropper.aligned, cropper.detector_name, max_pixels,
        max_bytes, os.getpid(), on_main_thread(),
    )  # fmt: skip
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=config,
    )
    pending: deque = deque()  # (index, path, future), oldest first
    broken = False

    def next_result() -> Faces:
        nonlocal broken
        i, path, future = pending.popleft()
        if not broken:
            try:
                return future.result()
            except BrokenProcessPool:
                # a worker died (killed, out of memory): finish in this process instead
                broken = True
                print(
                    "fakespotter: a worker process died; going on without workers", file=sys.stderr
                )
        return read_faces(cropper, path, max_pixels=max_pixels, max_bytes=max_bytes, alter=alter(i))

    try:
        for i, path in enumerate(files):
            future = None if broken else pool.submit(_worker_read_faces, path, alter(i))
            pending.append((i, path, future))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield next_result()
        while pending:
            yield next_result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


IN_FLIGHT_PER_WORKER = 16


def default_workers(n_files: int, aligned: bool = False) -> int:
    """One face-finding worker per core beyond the first (at most 4), for 64 files or more:
    starting a worker costs a second or two, not worth it for a few files. None for aligned
    crops: reading a crop is cheap, and a worker takes a core from the network (docs/speed.md:
    29.2 faces/s without against 19.5 with one, same run)."""
    if n_files < 64 or aligned:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


_worker: dict = {}


def _start_worker(
    size, template, aligned, detector, max_pixels, max_bytes, parent_pid, parent_on_main_thread
) -> None:
    die_with_parent(parent_pid, parent_on_main_thread)  # a killed parent takes its workers
    import torch

    torch.set_num_threads(1)  # the main process runs the backbone on the other cores
    _worker["cropper"] = FaceCropper(
        size, template, aligned=aligned, detector=detector, progress=False
    )
    _worker["limits"] = {"max_pixels": max_pixels, "max_bytes": max_bytes}


def _worker_read_faces(path: Path, alter) -> Faces:
    return read_faces(_worker["cropper"], path, alter=alter, **_worker["limits"])


def assessed(
    detector, found: Iterable[Faces], *, batch_size: int = 32
) -> Iterator[tuple[Faces, dict]]:
    """Each file with its faces' assessment (``FakeSpotter.assess``, this file's share:
    ``p_fake``, ``labels``, ``novelty``, ``warnings``, ``features``), in order; faces are
    scored in batches across files, and a file's faces are never split across batches'
    output."""
    pending: list[Faces] = []
    n_faces = 0

    def flush() -> Iterator[tuple[Faces, dict]]:
        crops = [face.crop for item in pending for face in item.faces]
        found = detector.assess(np.stack(crops)) if crops else {"p_fake": np.zeros(0)}
        k = 0
        for item in pending:
            n = len(item.faces)
            yield item, {key: None if v is None else v[k : k + n] for key, v in found.items()}
            k += n
        pending.clear()

    for item in found:
        pending.append(item)
        n_faces += len(item.faces)
        if n_faces >= batch_size:
            yield from flush()
            n_faces = 0
    yield from flush()


def rows_of(item: Faces, assessment: dict, model: str | None = None) -> list[Row]:
    """One file's rows (``rows.face_rows``: faces numbered left to right, or the one row that
    says why there are none) from its :func:`assessed` share; ``model``: the scoring model's
    identity, recorded in every row."""
    if item.error:
        return [Row(path=str(item.path), error=item.error, model=model)]
    return face_rows(
        str(item.path), item.faces, assessment["p_fake"], model=model,
        labels=assessment.get("labels"), novelty=assessment.get("novelty"),
        warnings=assessment.get("warnings"),
    )  # fmt: skip


def score_rows(
    detector, found: Iterable[Faces], *, batch_size: int = 32, model: str | None = None
) -> Iterator[Row]:
    """Rows for each file in order: the one way from found faces to rows, which ``detect``,
    ``scan``, the Python API and the web service all take (the web service through
    :func:`assessed` and :func:`rows_of`, since it also draws each face's layers).

    All rows of one file come out together, so a caller writing per file never writes half a
    file.
    """
    for item, assessment in assessed(detector, found, batch_size=batch_size):
        yield from rows_of(item, assessment, model)


def _folder_reason(path: Path) -> str | None:
    """Why a folder that iter_files had to yield could not be listed (None: not such a folder)."""
    try:
        if not path.is_dir():
            return None
        os.listdir(path)
    except OSError as e:
        return f"folder could not be listed ({e.strerror or type(e).__name__})"
    return None


def video_rows(
    detector,
    cropper: FaceCropper,
    video: Path,
    *,
    fps: float,
    report_dir: Path | None = None,
    model: str | None = None,
    on_verdict: Callable[[str, dict], None] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> list[Row]:
    """One row per face track of a video: its mean score over the sampled frames, from its
    start to its end. ``on_verdict(path, video_summary)`` hears the whole video's verdict.
    ``max_pixels``: the photos' limit, applied to each frame."""
    try:
        result = scan_video(video, detector, cropper, fps=fps, max_pixels=max_pixels)
    except VideoError as e:
        return [Row(path=str(video), error=str(e), model=model)]
    if report_dir is not None:
        import json

        from fakespotter.annotate import output_stem
        from fakespotter.video import plot_timeline

        report_dir.mkdir(parents=True, exist_ok=True)
        stem = output_stem(video)
        (report_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
        try:
            plot_timeline(result, report_dir / f"{stem}.png")
        except ImportError:  # no matplotlib: the JSON above and the rows are still written
            pass
    if on_verdict is not None:
        on_verdict(str(video), result["video"])
    if not result["tracks"]:
        return [Row(path=str(video), error=NO_FACE, model=model)]
    return [
        Row(
            path=str(video),
            face=t["track"],
            box=t["boxes"][0],
            p_fake=t["mean"],
            label=t["label"],
            detection_score=t["detection_score"],
            face_size=t["face_size"],
            warning=t["warning"],
            novelty=t["novelty"],
            model=model,
            start=t["start"],
            end=t["end"],
        )
        for t in result["tracks"]
    ]

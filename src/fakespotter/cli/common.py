"""What several commands share: loading the model, reading folders of faces, the overwrite
checks, and the words that say where an operating point came from."""

from __future__ import annotations

import sys

import click

from fakespotter.cli.app import global_settings, show_progress
from fakespotter.errors import UserError, install_extra


def load_detector(model_path: str | None):
    from fakespotter.persistence import load_model

    if model_path is None:
        from fakespotter.persistence import default_model_path

        model_path = default_model_path()
    det = load_model(model_path, device=global_settings()["device"])
    det.progress = show_progress()
    return det


def command_line() -> str:
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


def size_limits(max_pixels, max_bytes) -> dict:
    return {k: v for k, v in (("max_pixels", max_pixels), ("max_bytes", max_bytes)) if v}


def check_optional_packages(*, video: bool = False, report: bool = False) -> None:
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


def locked_output(output: str | None):
    """An ``OutputLock`` on ``output`` (None: standard output), released when the command
    ends however it ends."""
    if not output:
        return None
    from fakespotter.results import lock_output

    return click.get_current_context().with_resource(lock_output(output))


def reading(max_pixels, max_bytes) -> dict:
    """How a command reads folders of photos (``training.folder_faces``'s options): its
    progress bars, --workers, each image left out named on stderr, the size limits."""
    return {
        "progress": show_progress(),
        "workers": global_settings()["workers"],  # None: photos.default_workers
        "on_skip": echo_skipped,
        **size_limits(max_pixels, max_bytes),
    }


def echo_skipped(path: str, reason: str) -> None:
    click.echo(f"skipped {path}: {reason}", err=True)


def faces_of_sources(cropper, sources, kind: str, read_as: dict) -> list:
    """The largest faces of each (name, folder) source of one ``kind`` ("real", "fake"), read
    as ``read_as`` (:func:`reading`) says."""
    from fakespotter.training import folder_faces, source_label

    return [
        folder_faces(cropper, folder, source_label(kind, name), **read_as)
        for name, folder in sources
    ]


def check_sources(real_dirs, fake_dirs, training: dict | None = None) -> None:
    """``training.check_sources``, as a usage error of the command."""
    from fakespotter.training import check_sources as check

    try:
        check(real_dirs, fake_dirs, training)
    except UserError as e:
        raise click.UsageError(str(e)) from None


def chosen_by_words(record: dict) -> str:
    """When an operating point or novelty limit was chosen (models before #27: unsaid)."""
    by = record.get("chosen_by")
    return {"train": " at train time", "update": " by `fakespotter update`"}.get(str(by), "")


def band_words(det) -> str:
    """The uncertain band as every output applies it (``OperatingPoint.band``), in words."""
    band = det.operating_point_.band
    return "no uncertain band" if band is None else f"uncertain from {band[0]:.3f}"


def point_origin(point: dict, threshold: float) -> str:
    """Where a model's operating point (``threshold``, its record ``point``) came from, for
    `info` and update's note."""
    from fakespotter.rows import FAKE_THRESHOLD

    if point.get("chosen_on"):
        text = f", chosen on {point['chosen_on']}{chosen_by_words(point)}"
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

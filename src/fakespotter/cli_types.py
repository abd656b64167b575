"""Click parameter types shared by the ``fakespotter`` commands (cli.py and serve/cli.py),
kept apart so that neither command module imports the other."""

from __future__ import annotations

import click


class SafePath(click.Path):
    """click.Path that turns an unusable name (a NUL byte in it) into a usage error; plain
    click.Path lets os.stat's ValueError escape as a traceback."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "\x00" in value:
            self.fail(f"{value!r} contains a NUL byte, which no file name can", param, ctx)
        return super().convert(value, param, ctx)

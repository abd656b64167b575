"""Click parameter types shared by the ``fakespotter`` commands (cli.py and serve/cli.py),
kept apart so that neither command module imports the other."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import click


class SafePath(click.Path):
    """click.Path that turns an unusable name (a NUL byte in it) into a usage error; plain
    click.Path lets os.stat's ValueError escape as a traceback."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "\x00" in value:
            self.fail(f"{value!r} contains a NUL byte, which no file name can", param, ctx)
        return super().convert(value, param, ctx)


class RegistryChoice(click.Choice):
    """Choices read from a registry whenever click asks (parsing, --help), so an entry
    registered after import is accepted. ``read`` imports its registry lazily: --help stays
    fast."""

    def __init__(self, read: Callable[[], Iterable[str]]) -> None:
        self._read = read
        super().__init__(())

    @property
    def choices(self):
        return tuple(self._read())

    @choices.setter
    def choices(self, value) -> None:
        pass  # click.Choice.__init__ sets it; the registry is the list


def _variants() -> Iterable[str]:
    from fakespotter.criteria import variants  # no torch

    return variants()


def _backbones() -> Iterable[str]:
    from fakespotter.backbones import BACKBONES

    return BACKBONES


def _detectors() -> Iterable[str]:
    from fakespotter.faces.registry import DETECTORS

    return DETECTORS


class VariantChoice(RegistryChoice):
    """--variant: the coverage criteria's names plus ``embedding``."""

    def __init__(self) -> None:
        super().__init__(_variants)


class BackboneChoice(RegistryChoice):
    """--backbone: the registered backbones."""

    def __init__(self) -> None:
        super().__init__(_backbones)


class DetectorChoice(RegistryChoice):
    """--face-detector: the registered face detectors."""

    def __init__(self) -> None:
        super().__init__(_detectors)


class AugmentRecipes(click.ParamType):
    """--augment's recipe names, comma-separated (``perturb.AUGMENTATIONS``): each adds one
    altered copy of every photo, so ``simple,pipeline`` gives two. A bare --augment is
    ``simple``. The recipes are read only when the option is used: --help stays fast."""

    name = "RECIPES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from fakespotter.evaluation.perturb import AUGMENTATIONS

        names = tuple(part.strip().lower() for part in str(value).split(","))
        unknown = [n for n in names if n not in AUGMENTATIONS]
        if unknown or not all(names):
            self.fail(
                f"unknown augmentation {(unknown or [''])[0]!r} in {value!r}; "
                f"choose from {', '.join(AUGMENTATIONS)}, comma-separated",
                param,
                ctx,
            )
        return names


class NamedFolder(click.ParamType):
    """``NAME=DIR`` or ``DIR`` (named after the folder): one source of photos (--real,
    --fake), an existing folder."""

    name = "[NAME=]DIR"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from pathlib import Path

        name, sep, folder = str(value).partition("=")
        if not sep or not name or "/" in name:
            name, folder = Path(str(value)).name or str(value), str(value)
        folder = SafePath(exists=True, file_okay=False).convert(folder, param, ctx)
        return (name, folder)


# --model, the same for every command that scores with a model
model_option = click.option(
    "--model",
    "model_path",
    type=SafePath(dir_okay=False),
    help="Model file from `fakespotter train` (default: the shipped model).",
)

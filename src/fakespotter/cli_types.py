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


class VariantChoice(click.Choice):
    """--variant's choices, read from the coverage-criterion registry whenever click asks
    (parsing, --help), plus ``embedding``: a criterion registered after import is accepted.
    fakespotter.criteria imports no torch, so --help stays fast."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self):
        from fakespotter.criteria import variants

        return variants()

    @choices.setter
    def choices(self, value) -> None:
        pass  # click.Choice.__init__ sets it; the registry is the list


class DetectorChoice(click.Choice):
    """--face-detector's choices, read from the network registry whenever click asks."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self):
        from fakespotter.backbones.registry import DETECTORS

        return tuple(DETECTORS)

    @choices.setter
    def choices(self, value) -> None:
        pass  # click.Choice.__init__ sets it; the registry is the list


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


# --model, the same for every command that scores with a model
model_option = click.option(
    "--model",
    "model_path",
    type=SafePath(dir_okay=False),
    help="Model file from `fakespotter train` (default: the shipped model).",
)

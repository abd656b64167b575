"""Options and parameter types shared by the `fakespotter` commands, each declared once: a
command that takes one uses it from here (its help may say what it means for that command)."""

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


def _face_detectors() -> Iterable[str]:
    from fakespotter.faces.registry import FACE_DETECTORS

    return FACE_DETECTORS


class VariantChoice(RegistryChoice):
    """--variant: the coverage criteria's names plus ``embedding``."""

    def __init__(self) -> None:
        super().__init__(_variants)


class BackboneChoice(RegistryChoice):
    """--backbone: the registered backbones."""

    def __init__(self) -> None:
        super().__init__(_backbones)


class FaceDetectorChoice(RegistryChoice):
    """--face-detector: the registered face detectors."""

    def __init__(self) -> None:
        super().__init__(_face_detectors)


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

        from fakespotter.training import folder_name

        name, sep, folder = str(value).partition("=")
        if not sep or not name or "/" in name:
            name, folder = folder_name(value), str(value)
        folder = SafePath(exists=True, file_okay=False).convert(folder, param, ctx)
        return (name, folder)


# --model, the same for every command that scores with a model
model_option = click.option(
    "--model",
    "model_path",
    type=SafePath(dir_okay=False),
    help="Model file from `fakespotter train` (default: the shipped model).",
)


def overwrite_option(
    help: str = "Replace an existing output (without it, an existing output is refused before "
    "any work).",
):
    """--overwrite: replace an existing output (``results.check_overwritable``'s rule)."""
    return click.option("--overwrite", is_flag=True, help=help)


save_features_option = click.option(
    "--save-features",
    type=SafePath(dir_okay=False),
    default=None,
    help="Also write the training faces' features to this .npz file: `fakespotter update` "
    "refits the model on them and new faces in seconds (large: about 2 bytes per feature "
    "per face).",
)


# the library's size limits (faces.io.MAX_BYTES, MAX_PIXELS), written out so that --help
# imports no image code; tests/test_cli_options.py checks that they agree
MAX_BYTES = 100 * 1024 * 1024
MAX_PIXELS = 50_000_000


def limit_options(max_bytes: int | None = None, max_pixels: int | None = None):
    """--max-bytes and --max-pixels: refuse oversized inputs before decoding them. Defaults:
    the library's (None: the commands pass none on), or a command's own (serve's)."""
    limits = (
        ("--max-bytes", max_bytes, MAX_BYTES, "Refuse files larger than this many bytes."),
        (
            "--max-pixels",
            max_pixels,
            MAX_PIXELS,
            "Refuse images with more pixels than this, before decoding.",
        ),
    )

    def add(func):
        for name, default, library, text in limits:
            func = click.option(
                name,
                type=click.IntRange(min=1),
                default=default,
                show_default=default is not None,
                help=text if default is not None else f"{text} [default: {library}]",
            )(func)
        return func

    return add


# --aligned, the same for every command that reads faces (and for serve's uploads)
aligned_option = click.option(
    "--aligned",
    is_flag=True,
    help="Inputs are already aligned face crops (FFHQ style): skip face detection (an input "
    "that does not look like a face gets a warning).",
)


def real_option(help: str, required: bool = False):
    """--real NAME=DIR, repeatable: folders of real photos, each a named source."""
    return click.option(
        "--real", "real_dirs", required=required, multiple=True, type=NamedFolder(), help=help
    )


def fake_option(help: str, required: bool = False):
    """--fake NAME=DIR, repeatable: folders of fake photos, each a named source."""
    return click.option(
        "--fake", "fake_dirs", required=required, multiple=True, type=NamedFolder(), help=help
    )


def val_options(real_help: str, fake_help: str):
    """--val-real and --val-fake: held-out photos that choose the operating point."""

    def add(func):
        func = click.option(
            "--val-fake",
            "val_fake_dir",
            type=SafePath(exists=True, file_okay=False),
            help=fake_help,
        )(func)
        return click.option(
            "--val-real",
            "val_real_dir",
            type=SafePath(exists=True, file_okay=False),
            help=real_help,
        )(func)

    return add


def format_option(
    choices: Iterable[str] | Callable[[], Iterable[str]], help: str, default: str | None = "table"
):
    """--format: how rows or facts are printed; ``choices`` a list, or a function that reads
    a registry when click asks (``results.WRITERS``)."""
    kind = RegistryChoice(choices) if callable(choices) else click.Choice(list(choices))
    return click.option(
        "--format",
        "fmt",
        type=kind,
        default=default,
        show_default=default is not None,
        help=help,
    )


def threshold_option(help: str):
    """--threshold: a plain cut-off instead of the model's operating point."""
    return click.option("--threshold", type=click.FloatRange(0, 1), default=None, help=help)


def augment_option(help: str):
    """--augment [RECIPES]: altered copies of every photo (a bare --augment: simple)."""
    return click.option(
        "--augment",
        type=AugmentRecipes(),
        is_flag=False,
        flag_value="simple",
        default=None,
        help=help,
    )


def resume_option(help: str):
    return click.option("--resume", is_flag=True, help=help)


def batch_size_option(default: int, help: str):
    return click.option(
        "--batch-size", type=click.IntRange(1, 4096), default=default, show_default=True, help=help
    )


# --output of the commands that write a model file
model_output_option = click.option(
    "--output", required=True, type=SafePath(dir_okay=False), help="Model file to write."
)

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


# -- detect / train / evaluate -------------------------------------------------------------

def _load_detector(model_path: str | None):
    from fakespotter.detector import load_model

    if model_path is None:
        from fakespotter.detector import default_model_path

        model_path = default_model_path()
    det = load_model(model_path)
    det.progress = True
    return det


def _cropper(backbone, aligned: bool):
    from fakespotter.faces.pipeline import FaceCropper

    return FaceCropper(backbone.input_size, backbone.alignment_template, aligned=aligned)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Model file from `fakespotter train` (default: the shipped model).")
@click.option("--aligned", is_flag=True,
              help="Inputs are already aligned face crops (FFHQ style): skip face detection.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the results to this file instead of standard output.")
@_one_line_errors
def detect(paths, model_path, aligned, fmt, output) -> None:
    """Score every face in PATHS (image files or folders, searched recursively).

    One row per face, with the probability that it is GAN-synthesized; one row with a reason
    for each file that cannot be read or has no face.
    """
    from fakespotter.scan import find_faces, iter_files, score_rows

    det = _load_detector(model_path)
    files = list(iter_files(paths))
    if not files:
        raise click.ClickException("no image files found in the given paths")
    cropper = _cropper(det._backbone(), aligned)
    rows = list(score_rows(det, find_faces(cropper, files, progress=True, total=len(files),
                                           desc="detect")))
    _write_rows(rows, fmt, output)


def _write_rows(rows, fmt: str, output: str | None) -> None:
    import csv
    import io
    import json

    dicts = [r.as_dict() for r in rows]
    if fmt == "json":
        text = json.dumps(dicts, indent=2) + "\n"
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["path", "face", "box", "p_fake", "label", "error"])
        writer.writeheader()
        for d in dicts:
            writer.writerow({**d, "box": "" if d["box"] is None else " ".join(map(str, d["box"])),
                             "p_fake": "" if d["p_fake"] is None else f"{d['p_fake']:.6f}"})
        text = buf.getvalue()
    else:
        lines = [f"{'p_fake':>7}  {'label':5}  {'face':>4}  path"]
        for d in dicts:
            if d["error"]:
                lines.append(f"{'-':>7}  {'-':5}  {'-':>4}  {d['path']}  ({d['error']})")
            else:
                lines.append(f"{d['p_fake']:7.3f}  {d['label']:5}  {d['face']:>4}  {d['path']}")
        text = "\n".join(lines) + "\n"
    if output:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        click.echo(f"wrote {len(dicts)} rows to {output}", err=True)
    else:
        click.echo(text, nl=False)


def _largest_face_crops(cropper, folder: str, label: str):
    """Crops of the largest face of each image under ``folder``, plus counts of the rest."""
    import numpy as np

    from fakespotter.scan import NO_FACE, find_faces, iter_files

    files = list(iter_files([folder]))
    if not files:
        raise click.ClickException(f"no image files found in {folder}")
    crops, no_face, errors = [], 0, 0
    for item in find_faces(cropper, files, progress=True, total=len(files), desc=label):
        if item.faces:
            crops.append(item.faces[0].crop)
        elif item.error == NO_FACE:
            no_face += 1
        else:
            errors += 1
            click.echo(f"skipped {item.path}: {item.error}", err=True)
    size = cropper.size
    stack = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return stack, no_face, errors


@main.command()
@click.option("--real", "real_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of real face photos.")
@click.option("--fake", "fake_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of GAN-made face photos.")
@click.option("--backbone", default="facenet", show_default=True,
              type=click.Choice(["facenet", "dlib", "sface"]))
@click.option("--variant", default="channel", show_default=True,
              type=click.Choice(["layer", "channel", "embedding"]),
              help="layer: the paper's per-layer counts; channel: per-channel counts; "
                   "embedding: the final embedding (baseline).")
@click.option("--neuron", default="raw", show_default=True, type=click.Choice(["raw", "activation"]))
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@_one_line_errors
def train(real_dir, fake_dir, backbone, variant, neuron, aligned, output) -> None:
    """Train a detector on folders of real and fake face photos."""
    import datetime
    import shlex

    import numpy as np

    from fakespotter.detector import FakeSpotter, save_model

    det = FakeSpotter(backbone=backbone, variant=variant, neuron=neuron, progress=True)
    cropper = _cropper(det._backbone(), aligned)
    real, real_none, real_err = _largest_face_crops(cropper, real_dir, "real")
    fake, fake_none, fake_err = _largest_face_crops(cropper, fake_dir, "fake")
    if len(real) < 5 or len(fake) < 5:
        raise click.ClickException(f"need at least 5 faces of each class, found {len(real)} real "
                                   f"and {len(fake)} fake")
    X = np.concatenate([real, fake])
    y = np.r_[np.zeros(len(real), int), np.ones(len(fake), int)]
    det.cv = min(5, len(real), len(fake))
    det.fit(X, y)
    training = {
        "n_real": len(real), "n_fake": len(fake), "n_no_face": real_none + fake_none,
        "n_unreadable": real_err + fake_err, "real": str(real_dir), "fake": str(fake_dir),
        "aligned": aligned, "command": "fakespotter " + shlex.join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    save_model(det, output, training)
    click.echo(f"wrote {output}: {backbone}/{variant}, C={det.C_:g}, "
               f"cross-validated AUC {det.cv_auc_:.3f} on {len(real)} real + {len(fake)} fake faces")


@main.command()
@click.option("--real", "real_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--fake", "fake_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_path", type=click.Path(dir_okay=False))
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@_one_line_errors
def evaluate(real_dir, fake_dir, model_path, aligned, fmt) -> None:
    """Measure a detector on labelled folders (--real alone: how many real photos pass)."""
    import json

    from fakespotter.metrics import evaluate_scores

    det = _load_detector(model_path)
    cropper = _cropper(det._backbone(), aligned)
    scores, labels, no_face, errors = [], [], 0, 0
    for folder, label in ((real_dir, 0), (fake_dir, 1)):
        if folder is None:
            continue
        crops, n_none, n_err = _largest_face_crops(cropper, folder, "real" if label == 0 else "fake")
        p = det.predict_proba(crops)[:, 1] if len(crops) else []
        # no face found counts as predicted real (score 0): a detector that misses is no help
        scores += list(p) + [0.0] * n_none
        labels += [label] * (len(crops) + n_none)
        no_face += n_none
        errors += n_err
    result = evaluate_scores(labels, scores)
    result.update(n_no_face=no_face, n_unreadable=errors)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if value is not None:
                click.echo(f"{key:14s} {value:.4f}" if isinstance(value, float) else f"{key:14s} {value}")

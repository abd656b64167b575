"""`fakespotter train` and `fakespotter update`: fit a model, or teach one new faces."""

from __future__ import annotations

from pathlib import Path

import click

from fakespotter.cli.app import global_settings, main, one_line_errors
from fakespotter.cli.common import (
    band_words,
    check_sources,
    command_line,
    point_origin,
    reading,
)
from fakespotter.cli.options import (
    BackboneChoice,
    FaceDetectorChoice,
    SafePath,
    VariantChoice,
    aligned_option,
    augment_option,
    fake_option,
    limit_options,
    model_option,
    model_output_option,
    overwrite_option,
    real_option,
    save_features_option,
    val_options,
)
from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR


def _echo_operating_point(det, point: dict) -> None:
    click.echo(
        f"operating point on the held-out photos: fake at P >= {det.threshold_:.3f} "
        f"({band_words(det)}); real photos called fake {point['real_fake']:.1%}, uncertain "
        f"{point['real_uncertain']:.1%}; fakes caught {point['fake_fake']:.1%}, uncertain "
        f"{point['fake_uncertain']:.1%}",
        err=True,
    )


def _check_outputs(output, save_features, overwrite: bool) -> None:
    """train's and update's two outputs, checked before any work."""
    from fakespotter.modelfile import is_model_file
    from fakespotter.results import check_output
    from fakespotter.trainingset import is_training_features

    check_output(output, "--output", overwrite, is_model_file)
    if save_features:
        if Path(save_features).resolve() == Path(output).resolve():
            raise click.UsageError("--output and --save-features name the same file")
        check_output(save_features, "--save-features", overwrite, is_training_features)


# train warns when the model it wrote is unlikely to be of use
FEW_FACES_PER_CLASS = 100


WEAK_CV_AUC = 0.6


@main.command()
@real_option(
    "Folder of real face photos, NAME=DIR or DIR (named after the folder); repeat it "
    "for several sources (e.g. --real ffhq=ffhq/ --real wild=mine/). The model records each "
    "source; `fakespotter info` shows them.",
    required=True,
)
@fake_option(
    "Folder of GAN-made face photos; repeat it for several generator families, each "
    "named NAME=DIR (e.g. --fake stylegan=gan/ --fake diffusion=sd/; a plain DIR is named "
    "after the folder). The model records each source; `fakespotter info` shows them.",
    required=True,
)
@click.option(
    "--backbone",
    default="sface",
    show_default=True,
    type=BackboneChoice(),
    help="The face-recognition network whose neurons are counted.",
)
@click.option(
    "--variant",
    default="channel",
    show_default=True,
    type=VariantChoice(),
    help="layer: the paper's per-layer counts; channel: per-channel counts; "
    "kmultisection: per-layer counts at 4 thresholds; kmultisection-channel: "
    "per-channel counts at 4 thresholds; embedding: the final "
    "embedding (baseline); or a registered coverage criterion.",
)
@click.option(
    "--neuron",
    default="raw",
    show_default=True,
    type=click.Choice(["raw", "activation"]),
    help="raw: count a layer's own outputs; activation: the outputs of the nonlinearity after it.",
)
@aligned_option
@click.option(
    "--taps",
    type=click.IntRange(min=1),
    default=None,
    help="Count only the first N layers; the network stops after the N-th, so "
    "scanning is faster (docs/results.md shows the accuracy cost) [default: all].",
)
@augment_option(
    "Also train on altered copies of every photo, one per recipe: 'simple' (the bare "
    "flag: one of JPEG, blur, noise or resizing) or 'pipeline' (a photo's way from camera "
    "to upload: crop, white balance and tone, resampling, sharpening, noise, repeated JPEG), "
    "comma-separated for several copies: scores that shift less on re-shared photos.",
)
@val_options(
    "Held-out real photos (never trained on): the operating threshold is chosen on them "
    "and --val-fake so that at most 1% of these real photos are labelled fake, with an "
    "'uncertain' band below it; and the novelty warning's distance.",
    "Held-out GAN-made photos, for --val-real.",
)
@click.option(
    "--face-detector",
    type=FaceDetectorChoice(),
    default=DEFAULT_FACE_DETECTOR,
    show_default=True,
    help="Face detector that finds and aligns the faces in photos, stored in the model: "
    "photos scored with it go through the same one.",
)
@model_output_option
@overwrite_option()
@save_features_option
@limit_options()
@one_line_errors
def train(
    real_dirs,
    fake_dirs,
    backbone,
    variant,
    neuron,
    aligned,
    taps,
    augment,
    val_real_dir,
    val_fake_dir,
    face_detector,
    output,
    overwrite,
    save_features,
    max_pixels,
    max_bytes,
) -> None:
    """Train a detector on folders of real and fake face photos.

    With --val-real and --val-fake, the model also stores an operating point chosen on those
    held-out photos (threshold for at most 1% false alarms, an uncertain band that lets at
    most 5% of fakes through as real) and the novelty distance beyond which a face is flagged
    as unlike the training faces (99th percentile of the held-out real faces). Without them: the
    plain 0.5 cut-off, and the novelty limit from the training faces themselves.
    """
    from fakespotter.persistence import save_model
    from fakespotter.training import train as train_model

    if bool(val_real_dir) != bool(val_fake_dir):
        raise click.UsageError("--val-real and --val-fake go together")
    check_sources(real_dirs, fake_dirs)
    _check_outputs(output, save_features, overwrite)
    det, record = train_model(
        dict(real_dirs),
        dict(fake_dirs),
        backbone=backbone,
        variant=variant,
        neuron=neuron,
        aligned=aligned,
        taps=taps,
        augment=augment or (),
        val_real=val_real_dir,
        val_fake=val_fake_dir,
        face_detector=face_detector,
        device=global_settings()["device"],
        command=command_line(),
        **reading(max_pixels, max_bytes),
    )
    if record.operating_point is not None:
        _echo_operating_point(det, record.operating_point)
    rows, n_real, n_fake = record.rows, record.n_real, record.n_fake
    n_no_face, n_unreadable = len(record.no_face), len(record.unreadable)
    save_model(det, output, record.info)
    if save_features:
        from fakespotter.trainingset import save_training_features

        save_training_features(save_features, det, rows)
        click.echo(f"wrote {save_features}: the {len(rows)} training faces' features", err=True)
    click.echo(
        f"wrote {output}: {backbone}/{variant}, C={det.C_:g}, cross-validated AUC "
        f"{det.cv_auc_:.3f} on {n_real} real + {n_fake} fake faces"
    )
    if n_no_face + n_unreadable:
        click.echo(
            f"{n_no_face + n_unreadable} images were left out (named above): {n_no_face} "
            f"without a face, {n_unreadable} unreadable",
            err=True,
        )
    if min(n_real, n_fake) < FEW_FACES_PER_CLASS:
        click.echo(
            f"warning: only {min(n_real, n_fake)} faces in the smaller class; with "
            f"fewer than {FEW_FACES_PER_CLASS} of each the model is unlikely to generalize",
            err=True,
        )
    if det.cv_auc_ < WEAK_CV_AUC:
        click.echo(
            f"warning: cross-validated AUC {det.cv_auc_:.3f} is near chance (0.5): this "
            "model cannot tell these real and fake photos apart; check the folders",
            err=True,
        )


@main.command()
@model_option
@click.option(
    "--features",
    "features_path",
    type=SafePath(exists=True, dir_okay=False),
    help="The model's training features (`fakespotter train --save-features`) "
    "[default: the update kit beside the model (M.kit.safetensors): the shipped model has "
    "one].",
)
@fake_option(
    "Folder of new fake photos, NAME=DIR or DIR (repeatable); a name the model "
    "already has adds to that source.",
)
@real_option(
    "Folder of new real photos, NAME=DIR or DIR (repeatable), e.g. --real mine=photos/ "
    "for photos like the ones you will check; a name the model already has adds to that "
    "source.",
)
@aligned_option
@augment_option(
    "Also add altered copies of every new photo, one per recipe (as in train).",
)
@val_options(
    "Held-out real photos: the operating point is chosen again on them and --val-fake "
    "(as in train). Without them: on the update kit's held-out photos, or, with --features, "
    "the model's operating point is kept (`fakespotter info` says which).",
    "Held-out fake photos, for --val-real (include the new source's).",
)
@model_output_option
@overwrite_option()
@save_features_option
@limit_options()
@one_line_errors
def update(
    model_path,
    features_path,
    fake_dirs,
    real_dirs,
    aligned,
    augment,
    val_real_dir,
    val_fake_dir,
    output,
    overwrite,
    save_features,
    max_pixels,
    max_bytes,
) -> None:
    """Teach a model new faces in seconds, without a full retrain.

    Counts only the new photos, with the model's own per-layer thresholds, and refits the
    classifier (scaler, linear SVM at the model's C, calibration) on stored training rows
    plus the new ones: the update kit beside the model (the shipped model has one, and the
    updated model gets its own, new faces included), or the training features of --features.
    Use it to add faces of a new generator family, or real photos like the ones you check
    (--real NAME=DIR). The operating point is chosen again on --val-real and --val-fake when
    given, else on the kit's held-out photos; with --features and no held-out photos it is
    kept. Measured: docs/teaching.md, 'Teaching it a new generator' (benchmarks/teach.py).
    """
    import time

    from fakespotter.persistence import default_model_path, load_model, save_model
    from fakespotter.training import update as update_model
    from fakespotter.trainingset import load_training_features, save_training_features

    if not fake_dirs and not real_dirs:
        raise click.UsageError("give the new photos: --fake NAME=DIR and/or --real NAME=DIR")
    if bool(val_real_dir) != bool(val_fake_dir):
        raise click.UsageError("--val-real and --val-fake go together")
    check_sources(real_dirs, fake_dirs)
    _check_outputs(output, save_features, overwrite)
    if features_path is None:  # the updated model gets a kit of its own beside it
        from fakespotter.results import check_output
        from fakespotter.updatekit import is_kit_file, kit_file_beside

        check_output(kit_file_beside(output), "--output's update kit", overwrite, is_kit_file)
    det = load_model(model_path or default_model_path(), device=global_settings()["device"])
    check_sources(real_dirs, fake_dirs, dict(getattr(det, "training_", {})))
    kit = stored = None
    if features_path is None:  # the kit beside the model: the shipped model's ships with it
        from fakespotter.updatekit import kit_for_model

        if save_features:
            raise click.UsageError("--save-features needs --features (a kit holds a sample)")
        kit = kit_for_model(model_path or default_model_path(), det)
    else:
        stored = load_training_features(features_path, det)
    start = time.perf_counter()
    det, record = update_model(
        det,
        dict(real_dirs),
        dict(fake_dirs),
        kit=kit,
        stored=stored,
        aligned=aligned,
        augment=augment or (),
        val_real=val_real_dir,
        val_fake=val_fake_dir,
        command=command_line(),
        **reading(max_pixels, max_bytes),
    )
    rows, training = record.rows, record.info
    if val_real_dir:
        _echo_operating_point(det, record.operating_point or {})
    elif kit is not None:
        chosen = record.operating_point or {}
        click.echo(
            f"operating point chosen again with the update kit: fake at P >= "
            f"{det.threshold_:.3f} ({chosen.get('chosen_on', 'on the kit')})",
            err=True,
        )
    else:
        origin = point_origin(det.operating_point_.to_record(), det.threshold_)
        click.echo(
            f"kept the model's operating point (fake at P >= {det.threshold_:.3f}{origin}); "
            "give --val-real and --val-fake to choose it again with the new faces",
            err=True,
        )
    save_model(det, output, training)
    if record.next_kit is not None:  # what this update taught stays in the next update's kit
        from fakespotter.modelfile import model_id
        from fakespotter.updatekit import kit_file_beside, save_kit

        next_kit = record.next_kit
        next_kit.info["model_id"] = model_id(output)
        save_kit(kit_file_beside(output), next_kit)
        click.echo(
            f"wrote {kit_file_beside(output)}: its update kit ({len(next_kit)} stored faces, "
            "these new ones included: a later update from it keeps them)",
            err=True,
        )
    if save_features:
        save_training_features(save_features, det, rows)
        click.echo(f"wrote {save_features}: {len(rows)} training faces' features", err=True)
    click.echo(
        f"wrote {output}: refitted on {record.n_stored} stored"
        f"{' (update kit)' if kit is not None else ''} + {record.n_new} new faces in "
        f"{time.perf_counter() - start:.0f} s (thresholds kept), cross-validated AUC "
        f"{det.cv_auc_:.3f}"
    )

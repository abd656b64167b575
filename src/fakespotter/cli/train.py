"""`fakespotter train` and `fakespotter update`: fit a model, or teach one new faces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from fakespotter.cli.app import global_settings, main, one_line_errors, show_progress
from fakespotter.cli.common import (
    band_words,
    check_output,
    check_sources,
    command_line,
    faces_in_folder,
    faces_of_sources,
    is_model_file,
    model_sources,
    point_origin,
    real_source,
    size_limits,
    source_label,
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
from fakespotter.operating_point import OperatingPoint

# train --augment: real photos draw from seed 1, the k-th fake source from seed 2 + k; the
# r-th recipe listed adds 1000 r, so a second recipe never repeats the first one's draws
AUGMENT_SEED = 1
RECIPE_SEED_STEP = 1000


def _fit_operating_point(
    det,
    features,
    y,
    cropper,
    val_real_dir,
    val_fake_dir,
    limits,
    by: str = "train",
    novelty: bool = True,
) -> None:
    """The novelty signal, and with held-out photos the operating point (training.py);
    ``by``: the command choosing them (train, update), recorded with where they came from;
    ``novelty`` False: the operating point only (an update from a kit keeps the signal)."""
    from fakespotter.training import (
        NOVELTY_PERCENTILE,
        choose_operating_point,
        held_out_novelty_threshold,
        novelty_threshold,
        score_labelled,
    )

    if not val_real_dir:
        limit = held_out_novelty_threshold(det, features, y)
        det.set_novelty_limit(
            limit,
            {
                "chosen_on": "the real faces of 20% of the training faces, held out of the fit",
                "percentile": NOVELTY_PERCENTILE,
                "chosen_by": by,
            },
        )
        return
    if novelty:
        det.fit_novelty(features)
    sets = [
        (faces_in_folder(cropper, folder, name, limits), label)
        for folder, name, label in ((val_real_dir, "val real", 0), (val_fake_dir, "val fake", 1))
    ]
    scored = score_labelled(det, sets)
    point = choose_operating_point(scored["p_fake"], scored["labels"])
    det.set_operating_point(
        OperatingPoint.from_record(
            {**point, "chosen_on": f"{val_real_dir} + {val_fake_dir}", "chosen_by": by}
        )
    )
    if novelty:
        n_real = len(sets[0][0].crops)  # the features' rows: val real faces, then val fake
        det.set_novelty_limit(
            novelty_threshold(det.novelty(scored["features"][:n_real])),
            {"chosen_on": f"{val_real_dir}", "percentile": NOVELTY_PERCENTILE, "chosen_by": by},
        )
    band = band_words(det)
    click.echo(
        f"operating point on the held-out photos: fake at P >= {det.threshold_:.3f} ({band}); "
        f"real photos called fake {point['real_fake']:.1%}, uncertain {point['real_uncertain']:.1%}; "
        f"fakes caught {point['fake_fake']:.1%}, uncertain {point['fake_uncertain']:.1%}",
        err=True,
    )


# train --augment: the real source j draws from seed 1 (the first) or 1 + 500 + j, the k-th
# fake source from seed 2 + k (so up to 499 fake sources never share a real one's draws)
REAL_SEED_OFFSET = 500


def _training_rows(
    det, cropper, features, real_dirs, per_real, fake_dirs, per_source, augment, limits
):
    """The training faces as ``trainingset.TrainingFeatures``: the photos' ``features`` (each
    real source in turn, then each fake source), then for each recipe in ``augment`` one
    altered copy of each photo, counted by ``det``, in its photo's group (cross-validation
    fold). Real sources are named by ``real_source``."""
    import numpy as np

    from fakespotter.training import copies_of, merge_faces
    from fakespotter.trainingset import TrainingFeatures

    n_real = sum(len(f.crops) for f in per_real)
    y = np.r_[np.zeros(n_real, int), np.ones(len(features) - n_real, int)]
    parts = [*per_real, *per_source]
    source = np.repeat(np.arange(len(parts)), [len(f.crops) for f in parts])
    names = [real_source(name) for name, _ in real_dirs] + [name for name, _ in fake_dirs]
    rows = TrainingFeatures(features, y, np.arange(len(y)), source, names)
    if not augment:
        return rows
    copies = []
    for r, recipe in enumerate(augment):
        seed = AUGMENT_SEED + RECIPE_SEED_STEP * r
        copies += [
            faces_in_folder(
                cropper, folder, f"{source_label('real', name)}, {recipe} copy", limits,
                augment_seed=seed if j == 0 else seed + REAL_SEED_OFFSET + j,
                augmentation=recipe,
            )
            for j, (name, folder) in enumerate(real_dirs)
        ]  # fmt: skip
        copies += [
            faces_in_folder(
                cropper, folder, f"fake {name}, {recipe} copy", limits,
                augment_seed=seed + 1 + k, augmentation=recipe,
            )
            for k, (name, folder) in enumerate(fake_dirs)
        ]  # fmt: skip
    found = merge_faces(copies)
    photos = [p for f in parts for p in f.paths]
    keep, copy_of = copies_of(photos, found.paths)
    if not keep.any():
        return rows
    copy_features = det.transform(found.crops[keep])
    return TrainingFeatures(
        np.concatenate([features, copy_features]),
        np.r_[y, y[copy_of]],
        np.r_[rows.groups, copy_of],
        np.r_[source, source[copy_of]],
        rows.sources,
    )


def _check_outputs(output, save_features, overwrite: bool) -> None:
    """train's and update's two outputs, checked before any work."""
    from fakespotter.trainingset import is_training_features

    check_output(output, "--output", overwrite, is_model_file)
    if save_features:
        if Path(save_features).resolve() == Path(output).resolve():
            raise click.UsageError("--output and --save-features name the same file")
        check_output(save_features, "--save-features", overwrite, is_training_features)


def _sources_record(sources, faces) -> dict:
    """name -> {folder, n_faces}: what the model file records of each source."""
    return {
        name: {"folder": str(folder), "n_faces": len(f.crops)}
        for (name, folder), f in zip(sources, faces, strict=True)
    }


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
    import datetime

    import numpy as np

    from fakespotter.detector import LAYER_MEANS_KEY, FakeSpotter
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges
    from fakespotter.persistence import save_model
    from fakespotter.training import merge_faces

    if bool(val_real_dir) != bool(val_fake_dir):
        raise click.UsageError("--val-real and --val-fake go together")
    check_sources(real_dirs, fake_dirs)
    _check_outputs(output, save_features, overwrite)
    det = FakeSpotter(
        backbone=backbone,
        variant=variant,
        neuron=neuron,
        progress=show_progress(),
        taps=taps,
        device=global_settings()["device"],
        face_detector=face_detector,
    )
    cropper = det.face_cropper(aligned)
    limits = size_limits(max_pixels, max_bytes)
    per_real = faces_of_sources(cropper, real_dirs, "real", limits, name_no_face=True)
    per_source = faces_of_sources(cropper, fake_dirs, "fake", limits, name_no_face=True)
    real, fake = merge_faces(per_real), merge_faces(per_source)
    if len(real.crops) < 5 or len(fake.crops) < 5:
        raise click.ClickException(
            f"need at least 5 faces of each class, found {len(real.crops)} "
            f"real and {len(fake.crops)} fake"
        )
    X = np.concatenate([real.crops, fake.crops])
    y = np.r_[np.zeros(len(real.crops), int), np.ones(len(fake.crops), int)]
    features = det.fit_thresholds(X).transform(X)  # = det.fit(X, y), keeping the features
    rows = _training_rows(
        det, cropper, features, real_dirs, per_real, fake_dirs, per_source, augment, limits
    )
    # copies share their photo's cross-validation fold; without copies, plain stratified folds
    det.fit_features(rows.features, rows.y, groups=rows.groups if augment else None)
    n_no_face, n_unreadable = (
        len(real.no_face) + len(fake.no_face),
        len(real.unreadable) + len(fake.unreadable),
    )
    training = {
        "n_real": len(real.crops),
        "n_fake": len(fake.crops),
        "n_no_face": n_no_face,
        "n_unreadable": n_unreadable,
        "real": ", ".join(str(folder) for _, folder in real_dirs),
        "fake": ", ".join(str(folder) for _, folder in fake_dirs),
        "real_sources": _sources_record(real_dirs, per_real),
        "fake_sources": _sources_record(fake_dirs, per_source),
        "aligned": aligned,
        "augment": list(augment or ()),
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if variant != "embedding":  # the web page draws a face against these averages
        training[LAYER_MEANS_KEY] = det.layer_means(features, y)
        training[LAYER_DECISION_KEY] = decision_ranges(det, features, y)
    _fit_operating_point(det, features, y, cropper, val_real_dir, val_fake_dir, limits)
    if not val_real_dir:  # said in the file, so `info` can say where the 0.5 came from
        det.set_operating_point(OperatingPoint(chosen_on=None, chosen_by="train"))
    save_model(det, output, training)
    if save_features:
        from fakespotter.trainingset import save_training_features

        save_training_features(save_features, det, rows)
        click.echo(f"wrote {save_features}: the {len(rows)} training faces' features", err=True)
    click.echo(
        f"wrote {output}: {backbone}/{variant}, C={det.C_:g}, cross-validated AUC "
        f"{det.cv_auc_:.3f} on {len(real.crops)} real + {len(fake.crops)} fake faces"
    )
    if n_no_face + n_unreadable:
        click.echo(
            f"{n_no_face + n_unreadable} images were left out (named above): {n_no_face} "
            f"without a face, {n_unreadable} unreadable",
            err=True,
        )
    if min(len(real.crops), len(fake.crops)) < FEW_FACES_PER_CLASS:
        click.echo(
            f"warning: only {min(len(real.crops), len(fake.crops))} faces in the smaller class; with "
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
    import datetime
    import time

    import numpy as np

    from fakespotter.detector import LAYER_MEANS_KEY
    from fakespotter.evaluation.layers import LAYER_DECISION_KEY, decision_ranges
    from fakespotter.persistence import default_model_path, load_model, save_model
    from fakespotter.trainingset import load_training_features, save_training_features

    if not fake_dirs and not real_dirs:
        raise click.UsageError("give the new photos: --fake NAME=DIR and/or --real NAME=DIR")
    if bool(val_real_dir) != bool(val_fake_dir):
        raise click.UsageError("--val-real and --val-fake go together")
    check_sources(real_dirs, fake_dirs)
    _check_outputs(output, save_features, overwrite)
    if features_path is None:  # the updated model gets a kit of its own beside it
        from fakespotter.updatekit import is_kit_file, kit_file_beside

        check_output(kit_file_beside(output), "--output's update kit", overwrite, is_kit_file)
    det = load_model(model_path or default_model_path(), device=global_settings()["device"])
    det.progress = show_progress()
    training = dict(getattr(det, "training_", {}))
    check_sources(real_dirs, fake_dirs, training)
    if features_path is None:  # the kit beside the model: the shipped model's ships with it
        from fakespotter.updatekit import kit_for_model

        if save_features:
            raise click.UsageError("--save-features needs --features (a kit holds a sample)")
        kit = kit_for_model(model_path or default_model_path(), det)
        n_stored = len(kit)
    else:
        kit = None
        stored = load_training_features(features_path, det)
        n_stored = len(stored)
    start = time.perf_counter()
    cropper = det.face_cropper(aligned)
    limits = size_limits(max_pixels, max_bytes)
    per_real = faces_of_sources(cropper, real_dirs, "new real", limits, name_no_face=True)
    per_source = faces_of_sources(cropper, fake_dirs, "new fake", limits, name_no_face=True)
    parts = per_real + per_source
    crops = np.concatenate([p.crops for p in parts])
    if not len(crops):
        raise click.ClickException("no faces found in the new photos")
    new = _training_rows(
        det,
        cropper,
        det.transform(crops),
        real_dirs,
        per_real,
        fake_dirs,
        per_source,
        augment,
        limits,
    )
    # the refit voids the operating point: without held-out photos the model's is kept
    kept = det.operating_point_
    if not training.get("updates") and kept.chosen_by is None:
        kept = replace(kept, chosen_by="train")  # a file from before #27 chose it at train time
    if kit is not None:
        # the kit's rows (weighted to stand for every training face) plus the new ones; the
        # point is chosen again on out-of-fold scores (at most 1% of each real source
        # called fake) unless held-out photos are given; the novelty reference is the reals
        from fakespotter.updatekit import update_with_kit

        done = update_with_kit(det, kit, new, operating_point=not val_real_dir)
        rows = done["fitted"][0]  # what was fitted: the kit's rows and the new ones, its columns
    else:
        rows = stored.extended(new)
        det.set_params(Cs=(float(det.C_),))  # the model's regularization, not searched again
        det.fit_features(rows.features, rows.y, groups=rows.groups)
    photos = np.unique(rows.groups, return_index=True)[1]  # each group's first row: the photo
    n_real_new = sum(len(f.crops) for f in per_real)
    training.update(
        n_real=int(training.get("n_real") or 0) + n_real_new,
        n_fake=int(training.get("n_fake") or 0) + sum(len(f.crops) for f in per_source),
        real_sources=_merged_sources(model_sources(training, "real"), real_dirs, per_real),
        fake_sources=_merged_sources(model_sources(training, "fake"), fake_dirs, per_source),
        updates=[
            *training.get("updates", []),
            {
                "command": command_line(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "added": {
                    **{
                        real_source(name): len(f.crops)
                        for (name, _), f in zip(real_dirs, per_real, strict=True)
                    },
                    **{
                        name: len(f.crops)
                        for (name, _), f in zip(fake_dirs, per_source, strict=True)
                    },
                },
                "rows": rows.counts(),
                "stored": "update kit" if kit is not None else "features file",
                "operating_point": "chosen again"
                if val_real_dir
                else ("chosen again with the update kit" if kit is not None else "kept"),
            },
        ],
    )
    training["real"] = ", ".join(
        str(s.get("folder")) for s in training["real_sources"].values() if s.get("folder")
    )
    if det.variant != "embedding" and kit is None:  # a kit keeps some columns: averages stay
        training[LAYER_MEANS_KEY] = det.layer_means(rows.features[photos], rows.y[photos])
        training[LAYER_DECISION_KEY] = decision_ranges(det, rows.features[photos], rows.y[photos])
    if kit is None or val_real_dir:  # update_with_kit kept the novelty signal (valid still)
        _fit_operating_point(
            det,
            rows.features[photos],
            rows.y[photos],
            cropper,
            val_real_dir,
            val_fake_dir,
            limits,
            by="update",
            novelty=kit is None,
        )
    if kit is not None and not val_real_dir:
        chosen = done.get("operating_point") or {}
        click.echo(
            f"operating point chosen again with the update kit: fake at P >= "
            f"{det.threshold_:.3f} ({chosen.get('chosen_on', 'on the kit')})",
            err=True,
        )
    elif not val_real_dir:
        kept_by = int(kept.record.get("kept_by_updates", 0)) + 1
        det.set_operating_point(replace(kept, record={**kept.record, "kept_by_updates": kept_by}))
        origin = point_origin(det.operating_point_.to_record(), det.threshold_)
        click.echo(
            f"kept the model's operating point (fake at P >= {det.threshold_:.3f}{origin}); "
            "give --val-real and --val-fake to choose it again with the new faces",
            err=True,
        )
    save_model(det, output, training)
    if kit is not None:  # what this update taught stays in the next update's kit
        from fakespotter.modelfile import model_id
        from fakespotter.updatekit import extended_kit, kit_file_beside, save_kit

        next_kit = extended_kit(kit, done["fitted"])
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
        f"wrote {output}: refitted on {n_stored} stored"
        f"{' (update kit)' if kit is not None else ''} + {len(new)} new faces in "
        f"{time.perf_counter() - start:.0f} s (thresholds kept), cross-validated AUC "
        f"{det.cv_auc_:.3f}"
    )


def _merged_sources(old: dict, sources, faces) -> dict:
    """A model's record of its sources with the new photos of ``sources`` added by name."""
    merged = dict(old)
    for (name, folder), f in zip(sources, faces, strict=True):
        before = merged.get(name, {})
        merged[name] = {
            "folder": ", ".join(str(d) for d in (before.get("folder"), folder) if d),
            "n_faces": int(before.get("n_faces") or 0) + len(f.crops),
        }
    return merged

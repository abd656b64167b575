"""`fakespotter evaluate`: metrics of a model on labelled folders, and its report."""

from __future__ import annotations

from pathlib import Path

import click

from fakespotter.cli.app import main, one_line_errors, show_progress
from fakespotter.cli.common import (
    check_optional_packages,
    check_sources,
    command_line,
    faces_of_sources,
    load_detector,
    reading,
)
from fakespotter.cli.options import (
    SafePath,
    aligned_option,
    fake_option,
    format_option,
    limit_options,
    model_option,
    overwrite_option,
    real_option,
)
from fakespotter.errors import UserError


def _is_report_folder(path) -> bool:
    """Whether the folder ``path`` holds an evaluation report (its metrics.json)."""
    import json

    try:
        metrics = json.loads((Path(path) / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and "overall" in metrics


def _check_report_folder(path, overwrite: bool) -> None:
    """--report names a new or empty folder, or (``--overwrite``) one holding a report whose
    files are replaced; refused before any scoring."""
    import os

    from fakespotter.results import check_overwritable

    check_overwritable(path, overwrite=overwrite, ours=_is_report_folder)
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder the missing ones will be made in
    if not existing.is_dir():
        raise UserError(f"--report {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--report {path}: cannot write into {existing}")


@main.command()
@real_option(
    "Folder of real face photos, NAME=DIR or DIR (named after the folder); repeat it "
    "for per-source metrics.",
    required=True,
)
@fake_option(
    "Folder of GAN-made face photos, NAME=DIR or DIR; repeat it for per-source metrics "
    "(without it: how many real photos pass).",
)
@model_option
@aligned_option
@format_option(
    ["table", "json"],
    "How to print the metrics on standard output (json: every key always there, null "
    "where it does not apply).",
    default="table",
)
@click.option(
    "--report",
    "report_dir",
    type=SafePath(file_okay=False),
    help="Write report.md/.html, metrics.json and plots into this folder (new or empty; "
    "--overwrite replaces the report files in it).",
)
@overwrite_option()
@click.option(
    "--manifest",
    type=SafePath(exists=True, dir_okay=False),
    help="CSV with file,generator,source columns for per-generator breakdowns "
    "(default: file-name prefixes).",
)
@click.option(
    "--perturb",
    default="",
    help="Also score perturbed copies, e.g. jpeg:90,jpeg:50,blur:1,noise:5,resize:0.5",
)
@limit_options()
@one_line_errors
def evaluate(
    real_dirs,
    fake_dirs,
    model_path,
    aligned,
    fmt,
    report_dir,
    overwrite,
    manifest,
    perturb,
    max_pixels,
    max_bytes,
) -> None:
    """Measure a detector on labelled folders (--real alone: how many real photos pass).

    Each image is scored by its largest face; an image without a face counts as predicted
    real. `per_source`: each source against all photos of the other class. With --perturb,
    each perturbation's metrics are shown too.
    """
    import json

    from fakespotter.metrics import evaluate_scores
    from fakespotter.training import merge_faces, score_labelled

    check_sources(real_dirs, fake_dirs)
    check_optional_packages(report=bool(report_dir))
    if report_dir:
        _check_report_folder(report_dir, overwrite)
    perturbations = []
    if perturb:
        from fakespotter.evaluation import parse_perturbations

        perturbations = parse_perturbations(perturb)  # bad specs fail before any work
    det = load_detector(model_path)
    cropper = det.face_cropper(aligned)
    read_as = reading(max_pixels, max_bytes)
    reals = faces_of_sources(cropper, real_dirs, "real", read_as)
    fakes = faces_of_sources(cropper, fake_dirs, "fake", read_as)
    sets = [(faces, 0) for faces in reals] + [(faces, 1) for faces in fakes]
    scored = score_labelled(det, sets)
    all_paths, all_labels, all_scores, features = (
        scored["paths"],
        scored["labels"],
        list(scored["p_fake"]),
        scored["features"],
    )
    # accuracy at the model's operating threshold (0.5 for models without one)
    result = evaluate_scores(all_labels, all_scores, det.threshold_)
    result["threshold"] = det.threshold_
    result.update(_uncertain_shares(det, all_labels, all_scores))
    all_real, all_fake = (
        merge_faces(reals) if reals else None,
        merge_faces(fakes) if fakes else None,
    )
    result["per_source"] = {
        **{
            name: _source_metrics(det, "real", folder, faces, all_fake, scored)
            for (name, folder), faces in zip(real_dirs, reals, strict=True)
        },
        **{
            name: _source_metrics(det, "fake", folder, faces, all_real, scored)
            for (name, folder), faces in zip(fake_dirs, fakes, strict=True)
        },
    }
    result.update(
        n_no_face=sum(len(s.no_face) for s, _ in sets),
        n_unreadable=sum(len(s.unreadable) for s, _ in sets),
        perturbations=None,
        report=None,
    )
    perturbed = {}
    if perturbations:
        from fakespotter.evaluation import perturbed_scores

        perturbed = perturbed_scores(
            det, cropper, all_paths, perturbations, progress=show_progress()
        )
        result["perturbations"] = {
            name: {
                **evaluate_scores(all_labels, q["p_fake"], det.threshold_),
                "n_no_face": q["n_no_face"],
            }
            for name, q in perturbed.items()
        }
    if report_dir:
        _write_report(
            report_dir,
            det,
            all_paths,
            all_labels,
            all_scores,
            features,
            manifest,
            perturbed,
            model_path,
        )
        result["report"] = str(report_dir)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key in ("perturbations", "per_source"):
            continue
        if value is not None:
            click.echo(
                f"{key:14s} {value:.4f}" if isinstance(value, float) else f"{key:14s} {value}"
            )
    if len(real_dirs) > 1 or len(fake_dirs) > 1:  # else the lines above say it all
        heads = ("class", "n", "accuracy", "uncertain", "auc", "n_no_face")
        click.echo(f"\n{'source':14s} " + " ".join(f"{c:>10s}" for c in heads))
        for name, m in result["per_source"].items():
            own = m["class"]
            cells = [
                own,
                m[f"n_{own}"],
                m[f"{own}_accuracy"],
                m[f"{own}_uncertain"],
                m["auc"],
                m["n_no_face"],
            ]
            text = [
                "-" if c is None else (f"{c:.4f}" if isinstance(c, float) else str(c))
                for c in cells
            ]
            click.echo(f"{name:14s} " + " ".join(f"{c:>10s}" for c in text))
    if perturbed:
        columns = ("accuracy", "real_accuracy", "fake_accuracy", "auc", "n_no_face")
        click.echo(f"\n{'perturbation':14s} " + " ".join(f"{c:>13s}" for c in columns))
        for name, m in [("none", result), *result["perturbations"].items()]:
            cells = [
                "-"
                if m.get(c) is None
                else (f"{m[c]:.4f}" if isinstance(m[c], float) else str(m[c]))
                for c in columns
            ]
            click.echo(f"{name:14s} " + " ".join(f"{c:>13s}" for c in cells))


def _uncertain_shares(det, labels, scores) -> dict:
    """The share of each class's photos labelled uncertain (0.0 when the model labels none
    so); None for a class without photos."""
    import numpy as np

    said = np.array(det.labels(np.asarray(scores, dtype=float))) if len(scores) else np.array([])
    y = np.array(labels)
    return {
        f"{name}_uncertain": float(np.mean(said[y == cls] == "uncertain"))
        if (y == cls).any()
        else None
        for cls, name in ((0, "real"), (1, "fake"))
    }


def _source_metrics(det, kind: str, folder, faces, others, scored) -> dict:
    """One source's metrics against all the photos of the other class (``others``, None when
    there are none), from the scores already made; the same keys for every source."""
    from fakespotter.metrics import evaluate_scores

    by_path = dict(zip(scored["paths"], scored["p_fake"], strict=True))
    own = list(faces.paths) + list(faces.no_face)
    other = [] if others is None else list(others.paths) + list(others.no_face)
    reals, fakes = (own, other) if kind == "real" else (other, own)
    labels = [0] * len(reals) + [1] * len(fakes)
    scores = [by_path[p] for p in reals + fakes]
    return {
        "class": kind,
        "folder": str(folder),
        **evaluate_scores(labels, scores, det.threshold_),
        **_uncertain_shares(det, labels, scores),
        "n_no_face": len(faces.no_face),
        "n_unreadable": len(faces.unreadable),
    }


def _write_report(
    report_dir, det, paths, labels, scores, features, manifest, perturbed, model_path
) -> None:
    """The evaluation report: metrics, per-group breakdown, per-layer chart, perturbations."""
    from fakespotter.evaluation import (
        classifier_weight_per_layer,
        groups_from_manifest,
        groups_from_prefix,
        write_report,
    )

    groups = groups_from_manifest(paths, manifest) if manifest else groups_from_prefix(paths)
    layer_kw = {}
    if det.variant != "embedding" and features is not None:
        weights, label = classifier_weight_per_layer(det)
        layer_kw = dict(
            layer_counts=det.layer_counts(features),
            layer_names=det.taps_,
            layer_weights=weights,
            layer_weight_label=label,
            layer_labels=labels[: len(features)],
        )
    perturbations = {name: {**q, "labels": labels} for name, q in perturbed.items()}
    meta = {"model": str(model_path or "default"), "command": command_line()}
    write_report(
        report_dir,
        labels=labels,
        p_fake=scores,
        groups=groups,
        perturbations=perturbations or None,
        meta=meta,
        threshold=det.threshold_,
        **layer_kw,
    )
    click.echo(f"wrote the report to {report_dir}", err=True)

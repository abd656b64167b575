"""`fakespotter info`: what a model file is and what it was trained on."""

from __future__ import annotations

import click

from fakespotter.cli.app import main, one_line_errors
from fakespotter.cli.common import band_words, chosen_by_words, point_origin
from fakespotter.cli.options import format_option, model_option
from fakespotter.errors import first_line


@main.command()
@model_option
@format_option(
    ["table", "json"],
    "How to print it.",
    default="table",
)
@one_line_errors
def info(model_path, fmt) -> None:
    """What a model file is: network, features, what it was trained on (each real and fake
    source), its operating point and novelty limit (and where each was chosen), and how it
    was made and updated."""
    import json

    from fakespotter.evaluation.layers import LAYER_DECISION_KEY
    from fakespotter.persistence import default_model_path, load_model

    path = model_path or default_model_path()
    det = load_model(path, device=None)
    t = dict(det.training_)
    t.pop("layer_means", None)  # per-layer averages for the web page: long, not for reading
    t.pop(LAYER_DECISION_KEY, None)  # the same: the web page's per-layer decision spreads
    facts = {
        "model": str(path),
        "backbone": det.backbone,
        "variant": det.variant,
        "neuron": det.neuron,
        "face_detector": det.face_detector,
        "n_features": int(len(det.coef_)),
        "cv_auc": float(det.cv_auc_),
        "threshold": float(det.threshold_),
        "uncertain": None if det.uncertain_ is None else list(det.uncertain_),
        "operating_point": det.operating_point_.to_record(),
        "novelty_limit": det.novelty_threshold_,
        "novelty": None if det.novelty_ is None else det.novelty_.info_,
        "training": t,
        "update_kit": _kit_facts(path, det),
    }
    if det.variant != "embedding":  # how this machine counts the model's neurons
        from fakespotter.counting import engine

        facts["counting"] = engine()
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    click.echo(f"model        {facts['model']}")
    click.echo(
        f"network      {det.backbone}, {det.variant} features ({facts['n_features']:,}), "
        f"cross-validated AUC {det.cv_auc_:.3f}"
    )
    click.echo(f"faces found  by {det.face_detector}")
    if "counting" in facts:
        click.echo(f"counted by   {facts['counting']}")
    from fakespotter.training import model_sources

    head = "trained on  "
    for kind in ("real", "fake"):
        for name, source in model_sources(t, kind).items():
            click.echo(
                f"{head} {source.get('n_faces')} {kind} faces, source {name!r}: "
                f"{source.get('folder')}"
            )
            head = " " * len(head)
    band = band_words(det)
    band = "" if band.startswith("no ") else f", {band}"
    # files from before #27 do not say who chose them: without updates, train did
    by = {} if t.get("updates") else {"chosen_by": "train"}
    origin = point_origin({**by, **(facts["operating_point"] or {})}, det.threshold_)
    click.echo(f"labels       fake at P(fake) >= {det.threshold_:.3f}{band} ({origin[2:]})")
    if facts["novelty_limit"] is not None:
        novelty = {**by, **(facts["novelty"] or {})}
        click.echo(
            f"novelty      faces farther than {facts['novelty_limit']:.3f} are flagged "
            f"(chosen on {novelty.get('chosen_on', '?')}{chosen_by_words(novelty)})"
        )
    click.echo(f"made by      {t.get('command')} ({t.get('date')})")
    if t.get("then"):  # a step after train (the shipped model's: its kit and novelty)
        click.echo(f"             then {t['then']}")
    for u in t.get("updates", []):
        added = ", ".join(f"{n} {name}" for name, n in (u.get("added") or {}).items())
        point = {"kept": "; operating point kept", "chosen again": "; operating point chosen again"}
        click.echo(
            f"updated      added {added} faces by `fakespotter update`"
            f"{point.get(u.get('operating_point'), '')} ({u.get('date')})"
        )
    _echo_kit(facts["update_kit"])
    click.echo(
        "scope        README, 'What it can and cannot detect'; the shipped model's card: "
        "docs/model_card.md"
    )


def _kit_facts(model_path, det) -> dict | None:
    """The update kit beside a model (``updatekit``): its rows, and what an update from it
    was measured to learn (the shipped kit carries that); None without one."""
    from fakespotter.updatekit import KitError, kit_path_for, load_kit

    path = kit_path_for(model_path)
    if path is None:
        return None
    try:
        kit = load_kit(path, det)
    except KitError as e:
        return {"path": str(path), "error": first_line(str(e))}
    return {
        "path": str(path),
        "rows": len(kit),
        "rows_by_source": kit.info.get("rows_by_source_kit"),
        "measured": kit.info.get("measured"),
    }


def _echo_kit(kit: dict | None) -> None:
    if kit is None:
        click.echo("update kit   none beside this model: `update` needs --features")
        return
    if "error" in kit:
        click.echo(f"update kit   {kit['error']}")
        return
    click.echo(
        f"update kit   {kit['path']}: {kit['rows']:,} stored faces; `fakespotter update "
        "--fake NAME=DIR --output M2.safetensors` teaches this model new faces"
    )
    m = kit.get("measured")
    if m:
        per = m["by_held_out_generator"]
        caught = ", ".join(f"{g} {100 * r['caught']:.1f}%" for g, r in per.items())
        worst = max(r["real_called_fake_at_most"] for r in per.values())
        change = max(abs(r["others_change"]) for r in per.values())
        click.echo(
            f"             measured: after {m['k']} faces of a generator it had not seen, "
            f"{caught} of its other faces caught; at most {100 * worst:.1f}% of a real "
            f"source's photos called fake; the other generators within {100 * change:.1f} "
            f"points ({m['scope']}; {m['how']})"
        )

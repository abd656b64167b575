"""Evaluation report: metrics.json, report.md, report.html and PNG charts in one folder.

Everything a reviewer needs to check a detector: accuracy on real and on fake faces
separately, ROC AUC with an approximate 95 % interval, a breakdown per group (generator or
real source), robustness to photo perturbations, and the per-layer neuron coverage chart of
the FakeSpotter paper (Figure 3).  Charts need matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fakespotter.errors import UserError, install_extra
from fakespotter.metrics import evaluate_scores
from fakespotter.rows import FAKE_THRESHOLD

__all__ = ["THRESHOLD", "group_metrics", "wilson_interval", "auc_interval", "write_report"]

THRESHOLD = FAKE_THRESHOLD  # the label rule's cut-off (rows.py)
REAL_COLOR, FAKE_COLOR = "#1f77b4", "#d62728"
METRIC_LABELS = {
    "n_real": "real faces",
    "n_fake": "fake faces",
    "accuracy": "accuracy",
    "real_accuracy": "real accuracy (passed as real)",
    "fake_accuracy": "fake accuracy (caught)",
    "auc": "ROC AUC",
    "ap": "average precision",
    "eer": "equal error rate",
}


# -- numbers -----------------------------------------------------------------------------------

# What every report says of the method's reach (README, "What it can and cannot detect").
SCOPE = (
    "Scope: FakeSpotter's models are trained and measured on GAN faces of the StyleGAN family "
    "against FFHQ-style photos. Faces from other generator families (diffusion models such as "
    "Stable Diffusion) are not recognised: they score as real. These numbers hold for photos "
    "like the ones measured here, not beyond."
)
MATPLOTLIB_MISSING = f"charts need matplotlib: {install_extra('report')}"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95 % Wilson score interval of a proportion (sensible near 0 and 1, unlike +-1.96 SE)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def auc_interval(
    auc: float | None, n_real: int, n_fake: int, z: float = 1.96
) -> list[float] | None:
    """Approximate 95 % interval of ROC AUC from the Hanley-McNeil (1982) standard error."""
    if auc is None or not n_real or not n_fake:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_fake - 1) * (q1 - auc * auc) + (n_real - 1) * (q2 - auc * auc)) / (
        n_real * n_fake
    )
    se = math.sqrt(max(var, 0.0))
    return [max(0.0, auc - z * se), min(1.0, auc + z * se)]


def _intervals(m: dict) -> dict:
    n = m["n_real"] + m["n_fake"]

    def wilson(rate, count):
        return None if rate is None else wilson_interval(round(rate * count), count)

    return {
        "accuracy": wilson(m["accuracy"], n),
        "real_accuracy": wilson(m["real_accuracy"], m["n_real"]),
        "fake_accuracy": wilson(m["fake_accuracy"], m["n_fake"]),
        "auc": auc_interval(m["auc"], m["n_real"], m["n_fake"]),
    }


def group_metrics(
    labels: np.ndarray,
    p_fake: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    threshold: float = THRESHOLD,
) -> dict[str, dict]:
    """Metrics per group, groups sorted by name.

    An all-fake group (one generator) reports ``fake_accuracy`` (share caught), an all-real
    group ``real_accuracy`` (share passed); a mixed group reports every metric.  Each has
    ``n``, ``kind`` (fake, real or mixed), ``mean_p_fake`` and a 95 % interval of its accuracy.
    """
    groups = np.asarray([str(g) for g in groups], dtype=object)
    out = {}
    for name in sorted(set(groups)):
        mask = groups == name
        m = evaluate_scores(labels[mask], p_fake[mask], threshold)
        row: dict = {"n": int(mask.sum()), "mean_p_fake": float(p_fake[mask].mean())}
        if m["n_real"] == 0:
            row.update(
                kind="fake",
                fake_accuracy=m["fake_accuracy"],
                fake_accuracy_ci95=_intervals(m)["fake_accuracy"],
            )
        elif m["n_fake"] == 0:
            row.update(
                kind="real",
                real_accuracy=m["real_accuracy"],
                real_accuracy_ci95=_intervals(m)["real_accuracy"],
            )
        else:
            row.update(kind="mixed", **m, ci95=_intervals(m))
        out[str(name)] = row
    return out


def _perturbation_table(
    labels: np.ndarray, p_fake: np.ndarray, perturbations: Mapping, threshold: float = THRESHOLD
) -> list[dict]:
    """Rows: ``none`` (the clean scores), then one per perturbation in the given order."""
    rows = [{"perturbation": "none", **evaluate_scores(labels, p_fake, threshold)}]
    for name, value in perturbations.items():
        extra = {}
        if isinstance(value, Mapping):
            extra = {k: _plain(v) for k, v in value.items() if k not in ("p_fake", "labels")}
            p = np.asarray(value["p_fake"], dtype=float)
            y = np.asarray(value.get("labels", labels), dtype=int)
        else:
            p, y = np.asarray(value, dtype=float), labels
        if len(p) != len(y):
            raise ValueError(f"perturbation {name}: {len(p)} scores for {len(y)} labels")
        rows.append({"perturbation": str(name), **evaluate_scores(y, p, threshold), **extra})
    return rows


def _layer_summary(labels, layer_counts, layer_names, layer_weights, weight_label) -> dict:
    counts = np.asarray(layer_counts, dtype=np.float64)
    if counts.ndim != 2 or len(counts) != len(labels):
        raise ValueError(
            f"layer_counts must be N x L with N = {len(labels)} samples, got shape {counts.shape}"
        )
    n_layers = counts.shape[1]
    names = (
        list(layer_names) if layer_names is not None else [f"layer {i}" for i in range(n_layers)]
    )
    if len(names) != n_layers:
        raise ValueError(f"{len(names)} layer names for {n_layers} layers")
    summary: dict = {"names": [str(n) for n in names]}
    for cls, label in (("real", 0), ("fake", 1)):
        rows = counts[labels == label]
        summary[f"{cls}_n"] = int(len(rows))
        summary[f"{cls}_mean"] = rows.mean(axis=0).tolist() if len(rows) else None
        summary[f"{cls}_std"] = rows.std(axis=0).tolist() if len(rows) else None
    if layer_weights is not None:
        weights = np.asarray(layer_weights, dtype=np.float64).ravel()
        if len(weights) != n_layers:
            raise ValueError(f"{len(weights)} layer weights for {n_layers} layers")
        summary["weights"] = weights.tolist()
        summary["weight_label"] = weight_label
    return summary


def _plain(value):
    """JSON-friendly copy: numpy scalars/arrays to Python, NaN to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# -- entry point -------------------------------------------------------------------------------


def write_report(
    out_dir: str | os.PathLike,
    *,
    labels: Sequence[int] | np.ndarray,
    p_fake: Sequence[float] | np.ndarray,
    groups: Sequence[str] | None = None,
    layer_counts: np.ndarray | None = None,
    layer_labels: Sequence[int] | None = None,
    layer_names: Sequence[str] | None = None,
    layer_weights: Sequence[float] | None = None,
    perturbations: Mapping[str, object] | None = None,
    meta: Mapping[str, object] | None = None,
    layer_weight_label: str | None = None,
    threshold: float = THRESHOLD,
) -> dict:
    """Write metrics.json, report.md, report.html and PNG charts into ``out_dir``.

    Args:
        labels: 1 fake, 0 real, one per scored sample.
        p_fake: probability of fake per sample.
        threshold: P(fake) from which a sample counts as called fake (the model's operating
            threshold; 0.5 by default).
        groups: group name per sample (generator or real source) for a per-group table.
        layer_counts: N x L activated-neuron counts per layer (rows match ``labels``, or
            ``layer_labels`` when given); see :mod:`fakespotter.evaluation.layers`.
        layer_labels: labels of the ``layer_counts`` rows when they are not ``labels``
            (e.g. images with no face have a score but no counts).
        layer_names, layer_weights: name and classifier weight of each of the L layers.
        perturbations: name -> p_fake on the same samples after that perturbation, or
            name -> {"p_fake": ..., "labels": ... (optional), other numbers copied as is},
            e.g. when some perturbed photos lost their face.
        meta: free-form facts recorded with the numbers (model, data, command, date).
        layer_weight_label: what ``layer_weights`` are, for the chart's axis.

    Returns the content of metrics.json (plus ``files``, the names written).
    """
    labels = np.asarray(labels, dtype=int)
    p_fake = np.asarray(p_fake, dtype=float)
    if labels.ndim != 1 or labels.shape != p_fake.shape:
        raise ValueError(
            f"labels and p_fake must be equal-length vectors, got {labels.shape} and {p_fake.shape}"
        )
    if len(labels) == 0:
        raise UserError("nothing to report: no scored samples")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if groups is not None and len(groups) != len(labels):
        raise ValueError(f"{len(groups)} group names for {len(labels)} samples")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overall = evaluate_scores(labels, p_fake, threshold)
    result: dict = {
        "threshold": threshold,
        "overall": overall,
        "overall_ci95": _intervals(overall),
        "groups": group_metrics(labels, p_fake, groups, threshold) if groups is not None else None,
        "perturbations": (
            _perturbation_table(labels, p_fake, perturbations, threshold) if perturbations else None
        ),
        # layer counts exist only for images with a face: their own labels may be given
        "layers": (
            _layer_summary(
                labels if layer_labels is None else np.asarray(layer_labels, int),
                layer_counts,
                layer_names,
                layer_weights,
                layer_weight_label,
            )
            if layer_counts is not None
            else None
        ),
        "meta": _plain(dict(meta or {})),
        "scope": SCOPE,
    }

    try:
        plots = _write_plots(out, labels, p_fake, result, perturbations)
    except ImportError:  # the numbers are worth having without the charts
        plots = []
        result["plots"] = f"not drawn: {MATPLOTLIB_MISSING}"
    result["files"] = ["metrics.json", "report.md", "report.html", *plots]
    result = _plain(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(result, plots), encoding="utf-8")
    (out / "report.html").write_text(_html(result, plots, out), encoding="utf-8")
    return result


# -- text --------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt_ci(value, ci) -> str:
    return _fmt(value) if ci is None else f"{_fmt(value)} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _tables(result: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for each section: the same content for Markdown and HTML."""
    overall, ci = result["overall"], result["overall_ci95"]
    rows = [[METRIC_LABELS[k], _fmt_ci(v, ci.get(k))] for k, v in overall.items()]
    sections = [
        (
            "Overall",
            ["metric", "value [95% interval]"],
            rows,
            f"Threshold {result['threshold']}: p_fake >= threshold is called fake. "
            "Accuracy intervals: Wilson; AUC interval: Hanley-McNeil approximation.",
        )
    ]

    if result["groups"]:
        rows = []
        for name, g in result["groups"].items():
            if g["kind"] == "fake":
                rate = f"caught {_fmt_ci(g['fake_accuracy'], g['fake_accuracy_ci95'])}"
            elif g["kind"] == "real":
                rate = f"passed {_fmt_ci(g['real_accuracy'], g['real_accuracy_ci95'])}"
            else:
                rate = (
                    f"real {_fmt(g['real_accuracy'])}, fake {_fmt(g['fake_accuracy'])}, "
                    f"AUC {_fmt(g['auc'])}"
                )
            rows.append([name, g["kind"], str(g["n"]), rate, _fmt(g["mean_p_fake"])])
        sections.append(
            (
                "Per group",
                ["group", "kind", "n", "accuracy [95% interval]", "mean p_fake"],
                rows,
                "All-fake group: share caught as fake. All-real group: share passed as real.",
            )
        )

    if result["perturbations"]:
        keys = ["auc", "accuracy", "real_accuracy", "fake_accuracy", "n_real", "n_fake"]
        extra = sorted(
            {k for r in result["perturbations"] for k in r}
            - set(keys)
            - {"perturbation", "ap", "eer"}
        )
        rows = [
            [r["perturbation"], *(_fmt(r.get(k)) for k in keys + extra)]
            for r in result["perturbations"]
        ]
        sections.append(
            (
                "Perturbations",
                [
                    "perturbation",
                    "AUC",
                    "accuracy",
                    "real acc.",
                    "fake acc.",
                    "n real",
                    "n fake",
                    *extra,
                ],
                rows,
                "Each perturbation is applied to the photo before face detection.",
            )
        )

    layers = result["layers"]
    if layers:
        header = ["#", "layer", "real mean (std)", "fake mean (std)"]
        if "weights" in layers:
            header.append("weight")
        rows = []
        for i, name in enumerate(layers["names"]):
            row = [str(i), name]
            for cls in ("real", "fake"):
                mean, std = layers[f"{cls}_mean"], layers[f"{cls}_std"]
                row.append("-" if mean is None else f"{mean[i]:.1f} ({std[i]:.1f})")
            if "weights" in layers:
                row.append(f"{layers['weights'][i]:+.4f}")
            rows.append(row)
        note = "Mean number of neurons per layer above the layer threshold (neuron coverage)."
        if layers.get("weight_label"):
            note += f" Weight: {layers['weight_label']}."
        sections.append(("Neuron coverage per layer", header, rows, note))

    if result["meta"]:
        rows = [
            [str(k), json.dumps(v) if not isinstance(v, str) else v]
            for k, v in result["meta"].items()
        ]
        sections.append(("Run", ["key", "value"], rows, ""))
    return sections


PLOT_TITLES = {
    "roc.png": "ROC curve",
    "scores.png": "Score distribution",
    "layers.png": "Neuron coverage per layer",
    "perturbations.png": "Robustness",
}


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(result: dict, plots: list[str]) -> str:
    o = result["overall"]
    lines = [
        "# FakeSpotter evaluation",
        "",
        f"{o['n_real']} real and {o['n_fake']} fake faces. "
        f"Real accuracy {_fmt(o['real_accuracy'])}, fake accuracy {_fmt(o['fake_accuracy'])}, "
        f"ROC AUC {_fmt(o['auc'])}.",
        "",
        SCOPE,
        "",
    ]
    for title, header, rows, note in _tables(result):
        lines += [
            f"## {title}",
            "",
            "| " + " | ".join(map(_md_cell, header)) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
        lines += ["", note, ""] if note else [""]
    if plots:
        lines += ["## Charts", ""]
        lines += [f"![{PLOT_TITLES[p]}]({p})" for p in plots] + [""]
    return "\n".join(lines)


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


def _html(result: dict, plots: list[str], out: Path) -> str:
    """A single file: the charts are embedded as data URIs so it can be mailed around."""
    esc = html.escape
    o = result["overall"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>FakeSpotter evaluation</title>",
        f"<style>{HTML_STYLE}</style></head><body>",
        "<h1>FakeSpotter evaluation</h1>",
        f"<p>{o['n_real']} real and {o['n_fake']} fake faces. Real accuracy "
        f"{_fmt(o['real_accuracy'])}, fake accuracy {_fmt(o['fake_accuracy'])}, "
        f"ROC AUC {_fmt(o['auc'])}.</p>",
        f"<p>{esc(SCOPE)}</p>",
    ]
    for title, header, rows, note in _tables(result):
        parts.append(
            f"<h2>{esc(title)}</h2><table><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in header)
            + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
        if note:
            parts.append(f'<p class="note">{esc(note)}</p>')
    if plots:
        parts.append("<h2>Charts</h2>")
    for name in plots:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        parts.append(f'<img alt="{esc(PLOT_TITLES[name])}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- charts ------------------------------------------------------------------------------------


def _write_plots(
    out: Path, labels: np.ndarray, p_fake: np.ndarray, result: dict, perturbations: Mapping | None
) -> list[str]:
    import matplotlib

    plt = _Figures()  # no pyplot: no process-wide backend or figure registry, no window
    written = []
    with matplotlib.rc_context(
        {
            "font.size": 11,
            "axes.titlesize": 13,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 100,
        }
    ):
        if result["overall"]["auc"] is not None:
            _plot_roc(plt, out / "roc.png", labels, p_fake, result, perturbations)
            written.append("roc.png")
        _plot_scores(plt, out / "scores.png", labels, p_fake, result["threshold"])
        written.append("scores.png")
        if result["layers"] is not None:
            _plot_layers(plt, out / "layers.png", result["layers"])
            written.append("layers.png")
        if result["perturbations"]:
            _plot_perturbations(plt, out / "perturbations.png", result["perturbations"])
            written.append("perturbations.png")
    return written


class _Figures:
    """The two pyplot calls the charts make, on plain Figures (files only)."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig) -> None:
        fig.clear()


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_roc(plt, path, labels, p_fake, result, perturbations) -> None:
    from sklearn.metrics import roc_curve

    o = result["overall"]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance (AUC 0.5)")
    rows = {r["perturbation"]: r for r in result["perturbations"] or []}
    for name, value in (perturbations or {}).items():
        if rows.get(name, {}).get("auc") is None:
            continue
        p = np.asarray(value["p_fake"] if isinstance(value, Mapping) else value, dtype=float)
        y = np.asarray(value.get("labels", labels) if isinstance(value, Mapping) else labels)
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, linewidth=1.2, alpha=0.8, label=f"{name} (AUC {rows[name]['auc']:.3f})")
    fpr, tpr, _ = roc_curve(labels, p_fake)
    ax.plot(
        fpr,
        tpr,
        color="black",
        linewidth=2.2,
        label=f"{'clean' if perturbations else 'detector'} (AUC {o['auc']:.3f})",
    )
    ax.plot(
        1 - o["real_accuracy"],
        o["fake_accuracy"],
        "o",
        color="black",
        markersize=7,
        markerfacecolor="white",
        label=f"threshold {result['threshold']:.3g}",
    )
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        aspect="equal",
        xlabel="false positive rate (real called fake)",
        ylabel="true positive rate (fake caught)",
        title=f"ROC: {o['n_real']} real vs {o['n_fake']} fake faces",
    )
    ax.legend(loc="lower right", fontsize=9)
    _save(plt, fig, path)


def _plot_scores(plt, path, labels, p_fake, threshold: float = THRESHOLD) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(0, 1, 41)
    for label, name, color in ((0, "real", REAL_COLOR), (1, "fake", FAKE_COLOR)):
        p = p_fake[labels == label]
        if len(p):
            ax.hist(p, bins=bins, color=color, alpha=0.35)
            ax.hist(
                p,
                bins=bins,
                color=color,
                histtype="step",
                linewidth=1.8,
                label=f"{name} (n={len(p)})",
            )
    ax.axvline(
        threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3g}"
    )
    ax.set(
        xlim=(0, 1),
        xlabel="p_fake (probability the face is GAN-made)",
        ylabel="number of faces",
        title="Scores of real and fake faces",
    )
    ax.legend(loc="upper center")
    _save(plt, fig, path)


def _plot_layers(plt, path, layers: dict) -> None:
    """Counts per layer (log scale when layers differ in size by orders of magnitude), then
    the real/fake difference in std units (the counts' curves often overlap at that scale),
    then the classifier weight per layer."""
    names = layers["names"]
    x = np.arange(len(names))
    has_both = layers["real_mean"] is not None and layers["fake_mean"] is not None
    panels = (
        ["counts"]
        + (["difference"] if has_both else [])
        + (["weights"] if "weights" in layers else [])
    )
    ratios = {"counts": 3, "difference": 1.6, "weights": 1.6}
    fig, axes = plt.subplots(
        len(panels),
        1,
        sharex=True,
        squeeze=False,
        figsize=(max(7.0, 0.28 * len(names) + 3), 2.2 + 2.3 * len(panels)),
        gridspec_kw={"height_ratios": [ratios[p] for p in panels]},
    )
    ax = dict(zip(panels, axes[:, 0], strict=False))

    means = []
    for cls, color in (("real", REAL_COLOR), ("fake", FAKE_COLOR)):
        mean, std = layers[f"{cls}_mean"], layers[f"{cls}_std"]
        if mean is None:
            continue
        mean, std = np.asarray(mean), np.asarray(std)
        means.append(mean)
        ax["counts"].plot(
            x,
            mean,
            "o-",
            color=color,
            markersize=3.5,
            linewidth=1.6,
            label=f"{cls} (n={layers[f'{cls}_n']}), mean",
        )
        ax["counts"].fill_between(
            x, np.maximum(mean - std, 0), mean + std, color=color, alpha=0.2, label=f"{cls} ±1 std"
        )
    positive = np.concatenate(means) if means else np.zeros(0)
    positive = positive[positive > 0]
    if len(positive) and positive.max() / positive.min() > 100:
        ax["counts"].set_yscale("log")  # layer sizes span orders of magnitude
    ax["counts"].set(
        ylabel="activated neurons per image", title="Neuron coverage per layer: real vs fake faces"
    )
    ax["counts"].legend(fontsize=9)

    if has_both:
        real_m, fake_m = np.asarray(layers["real_mean"]), np.asarray(layers["fake_mean"])
        pooled = np.sqrt(
            (np.asarray(layers["real_std"]) ** 2 + np.asarray(layers["fake_std"]) ** 2) / 2
        )
        effect = np.divide(fake_m - real_m, pooled, out=np.zeros_like(pooled), where=pooled > 0)
        dax = ax["difference"]
        dax.bar(x, effect, width=0.7, color=[FAKE_COLOR if e > 0 else REAL_COLOR for e in effect])
        dax.axhline(0, color="black", linewidth=0.8)
        dax.set(
            ylabel="std units",
            title="Fake minus real mean count, in pooled std (red: more neurons fire on fakes)",
        )
        dax.title.set_fontsize(11)

    if "weights" in layers:
        wax = ax["weights"]
        weights = np.asarray(layers["weights"])
        wax.bar(x, weights, width=0.7, color=[FAKE_COLOR if w > 0 else REAL_COLOR for w in weights])
        wax.axhline(0, color="black", linewidth=0.8)
        label = layers["weight_label"]
        wax.set(
            ylabel="weight", title="Classifier weight per layer" + (f": {label}" if label else "")
        )
        wax.title.set_fontsize(11)

    bottom = axes[-1, 0]
    bottom.set_xlabel("layer (input → output)")
    bottom.set_xlim(-0.6, len(names) - 0.4)
    if len(names) <= 60:
        bottom.set_xticks(x)
        bottom.set_xticklabels(
            [f"{i} {_short(n)}" for i, n in enumerate(names)], rotation=90, fontsize=7
        )
    _save(plt, fig, path)


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _plot_perturbations(plt, path, rows: list[dict]) -> None:
    metrics = [
        ("auc", "ROC AUC", "#444444"),
        ("accuracy", "accuracy", "#8c8c8c"),
        ("real_accuracy", "real accuracy", REAL_COLOR),
        ("fake_accuracy", "fake accuracy", FAKE_COLOR),
    ]
    names = [r["perturbation"] for r in rows]
    x = np.arange(len(names))
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(names) + 2), 4.8))
    for k, (key, label, color) in enumerate(metrics):
        values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
        ax.bar(x + (k - 1.5) * width, values, width, color=color, label=label)
    ax.axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(
        names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
    )
    ax.set(
        ylim=(0, 1.12),
        ylabel="score",
        xlabel="perturbation applied before face detection",
        title="Robustness to photo perturbations",
    )
    ax.grid(axis="x", visible=False)
    ax.legend(ncol=5, loc="upper center", fontsize=9, frameon=False)
    _save(plt, fig, path)

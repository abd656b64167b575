"""Detection v2, first study: classifiers, count transforms and mirrored faces on SFace channels.

    python benchmarks/detection_v2.py [--limit N] [--markdown docs/detection_v2.md]

Issue #13's items 3-5 that need no new network: each idea changes one thing of today's
recipe (SFace channel counts, one augmented copy per training photo, linear SVM with C by
cross-validation, Platt calibration) and is measured the same way:

* val: AUC and Brier score (calibration); choice among ideas is by val AUC only;
* test: AUC, accuracy at 0.5, and at the operating point chosen on val (at most 1% of val
  reals called fake) the share of fakes caught and of reals kept; wild/real called fake there;
* leave-one-generator-out as docs/results.md's table: trained on real + StyleGAN1 only, the
  worst AUC over the other generators' test faces and the share of them caught at that
  model's own val-chosen point (val reals + StyleGAN1 val fakes);
* perturbed test copies (jpeg:50, blur:1, noise:5, resize:0.5; thresholds of the clean train
  split, as deployed): the largest AUC drop and caught/kept drop against clean test;
* ms/face: the idea's feature cost relative to one counted forward pass (a mirror doubles it).

The paper's `layer` counts with its linear SVM are the first row. Stages are reproduce.py's
(MTCNN landmarks, aligned crops, counts), cached under out/detection_v2/<run>/; each idea's
result is cached there too, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402

from fakespotter.backbones import get_backbone  # noqa: E402
from fakespotter.coverage import NeuronCoverage, counts_per_layer  # noqa: E402
from fakespotter.detector import FakeSpotter  # noqa: E402
from fakespotter.evaluation.perturb import parse_perturbations  # noqa: E402
from fakespotter.metrics import evaluate_scores  # noqa: E402
from fakespotter.training import choose_operating_point, scores_with_missing  # noqa: E402

PERTURBATIONS = "jpeg:50,blur:1,noise:5,resize:0.5"
Predict = Callable[[np.ndarray], np.ndarray]  # features -> P(fake)


def mirrored_features(crops: np.ndarray, thresholds, desc: str) -> np.ndarray:
    """Channel counts of the left-right mirrored crops, with the clean thresholds."""
    bb = get_backbone("sface").load()
    coverage = NeuronCoverage(
        bb.model, bb.taps(), "channel", "raw", bb.activations, thresholds=thresholds
    )
    return reproduce.extract(coverage, bb, np.ascontiguousarray(crops[:, :, ::-1]), desc)["channel"]


def stage_mirrored(rows, landmarks, f, out: Path) -> np.ndarray:
    path = out / "mirrored_sface.npy"
    if path.exists():
        return np.load(path)
    crops = reproduce.align_all(rows, landmarks, get_backbone("sface").untrained())
    F = mirrored_features(crops, f["thresholds"], "coverage mirrored")
    np.save(path, F)
    return F


# -- classifiers: fit on (F, y, groups), return P(fake) of new features ---------------------


# C grids narrowed to where today's model lands (C = 1e-4 of 1e-5..1): each fit is minutes here
SVM_CS = (1e-5, 1e-4, 1e-3)


def linear_svm(F, y, groups) -> Predict:
    det = FakeSpotter(backbone="sface", variant="channel", Cs=SVM_CS).fit_features(
        F, y, groups=groups
    )
    return lambda X: det.predict_proba(features=X)[:, 1]


def _standardized(F):
    mean, scale = F.mean(0), F.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return mean, scale


def _folds(y, groups):
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(y, y, groups))


def logistic(F, y, groups) -> Predict:
    from sklearn.linear_model import LogisticRegressionCV

    mean, scale = _standardized(F)
    clf = LogisticRegressionCV(
        Cs=(1e-4, 1e-3, 1e-2), cv=_folds(y, groups), scoring="roc_auc", max_iter=500
    ).fit((F - mean) / scale, y)
    return lambda X: clf.predict_proba((X - mean) / scale)[:, 1]


def rbf_features_svm(F, y, groups) -> Predict:
    """An RBF-kernel SVM, approximated: 1,000 Nystroem features, then the linear SVM."""
    from sklearn.kernel_approximation import Nystroem

    mean, scale = _standardized(F)
    mapper = Nystroem(gamma=1.0 / F.shape[1], n_components=1000, random_state=0)
    Z = mapper.fit_transform((F - mean) / scale).astype(np.float32)
    det = FakeSpotter(backbone="sface", variant="channel", Cs=SVM_CS).fit_features(
        Z, y, groups=groups
    )
    return lambda X: det.predict_proba(features=mapper.transform((X - mean) / scale))[:, 1]


def boosting(F, y, groups) -> Predict:
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, max_features=0.2, early_stopping=True, random_state=0
    ).fit(F, y)
    return lambda X: clf.predict_proba(X)[:, 1]


# -- the ideas ------------------------------------------------------------------------------


def ideas() -> list[dict]:
    """name, features ("layer" or "channel"), transform, classifier, training views, TTA."""
    base = {"features": "channel", "log": False, "fit": "svm", "views": ("aug",), "tta": False}
    return [
        {
            "name": "paper: layer counts, linear SVM",
            **base,
            "features": "layer",
            "views": (),
        },
        {"name": "channel counts, linear SVM, no augmentation", **base, "views": ()},
        {"name": "today's default: channel, linear SVM, + augmented copy", **base},
        {"name": "+ mirrored face averaged in at test time", **base, "tta": True},
        {"name": "log counts", **base, "log": True},
        {"name": "logistic regression (C by 5-fold AUC)", **base, "fit": "logistic"},
        {"name": "RBF SVM (1,000 Nystroem features)", **base, "fit": "rbf"},
        {"name": "gradient boosting on counts", **base, "fit": "boosting"},
        {
            "name": "+ mirrored copies in training and at test time",
            **base,
            "views": ("aug", "mirror"),
            "tta": True,
        },
    ]


FITS = {"svm": linear_svm, "logistic": logistic, "rbf": rbf_features_svm, "boosting": boosting}


def brier(y, p) -> float:
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per split and class")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    out = reproduce.ROOT / "out" / "detection_v2" / (f"limit{args.limit}" if args.limit else "full")
    out.mkdir(parents=True, exist_ok=True)
    rows = reproduce.read_manifest(args.limit)
    study = reproduce.Study(rows)
    split = study.split
    landmarks = reproduce.stage_landmarks(rows, out / "landmarks.npz")
    f = reproduce.stage_features(rows, landmarks, "sface", out / "features_sface.npz")
    have = f["have"].astype(bool)
    train_idx = np.flatnonzero(split == "train")
    test_idx = np.flatnonzero(split == "test")
    aug = reproduce.stage_altered(
        rows, train_idx, reproduce.augmented_image_of(rows), "augment", out, ["sface"],
        {"sface": f},
    )["sface"]  # fmt: skip
    mirrored = stage_mirrored(rows, landmarks, f, out)
    perturbed = {}
    for p in parse_perturbations(PERTURBATIONS):
        feats = reproduce.stage_altered(
            rows, test_idx, reproduce.perturbed_image_of(rows, p), p.name, out, ["sface"],
            {"sface": f},
        )["sface"]  # fmt: skip
        folder = out / "altered" / p.name.replace(":", "_")
        m_path = folder / "mirrored_sface.npy"
        if not m_path.exists():
            np.save(
                m_path,
                mirrored_features(
                    np.load(folder / "crops_sface.npy"), f["thresholds"], f"mirrored {p.name}"
                ),
            )
        perturbed[p.name] = (feats["channel"], np.load(m_path), feats["have"].astype(bool))

    results = []
    for idea in ideas():
        cache = out / ("idea_" + "".join(c if c.isalnum() else "_" for c in idea["name"]) + ".json")
        if cache.exists():
            results.append(json.loads(cache.read_text()))
            continue
        results.append(measure_idea(idea, study, f, aug, mirrored, perturbed, have))
        cache.write_text(json.dumps(results[-1], indent=2))
        print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = markdown(results, args.limit)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


_FITTED: dict = {}  # (idea minus "tta", "main" | "logo") -> Predict: a refit would be identical


def measure_idea(idea, study, f, aug, mirrored, perturbed, have) -> dict:
    split, y, gen = study.split, study.y, study.gen
    slices = _slices() if idea["features"] == "layer" else None

    def view(F):  # the idea's features from channel counts
        if slices is not None:
            return counts_per_layer(F, slices)
        return np.log1p(F) if idea["log"] else F

    F, F_mirror = view(f["channel"]), view(mirrored)
    A = view(aug["channel"])
    aug_idx = np.flatnonzero(split == "train")  # row of each augmented copy
    aug_have = aug["have"].astype(bool)

    def fit(train_mask, which: str) -> Predict:
        key = (json.dumps({k: v for k, v in idea.items() if k not in ("name", "tta")}), which)
        if key not in _FITTED:
            _FITTED[key] = fit_new(train_mask)
        return _FITTED[key]

    def fit_new(train_mask) -> Predict:
        photos = np.flatnonzero(train_mask & (split == "train") & have)  # never val or test
        parts, ys, groups = [F[photos]], [y[photos]], [photos]
        if "aug" in idea["views"]:
            keep = np.isin(aug_idx, photos) & aug_have
            parts.append(A[keep])
            ys.append(y[aug_idx[keep]])
            groups.append(aug_idx[keep])
        if "mirror" in idea["views"]:
            parts.append(F_mirror[photos])
            ys.append(y[photos])
            groups.append(photos)
        return FITS[idea["fit"]](np.concatenate(parts), np.concatenate(ys), np.concatenate(groups))

    def scores(predict, X, X_mirror, found) -> np.ndarray:
        p = predict(X[found]) if found.any() else np.zeros(0)
        if idea["tta"] and found.any():
            p = (p + predict(X_mirror[found])) / 2
        return scores_with_missing(p, found)

    predict = fit(split == "train", "main")
    p = scores(predict, F, F_mirror, have)
    val, test, wild = split == "val", split == "test", split == "wild"
    point = choose_operating_point(p[val], y[val])
    t = point["threshold"]
    m_test = evaluate_scores(y[test], p[test])
    at_point = evaluate_scores(y[test], p[test], t)
    m_wild = evaluate_scores(y[wild], p[wild], t)
    result = {
        "idea": idea["name"],
        "val_auc": evaluate_scores(y[val], p[val])["auc"],
        "val_brier": brier(y[val & have], p[val & have]),
        "test_auc": m_test["auc"],
        "test_accuracy": m_test["accuracy"],
        "threshold": t,
        "test_caught": at_point["fake_accuracy"],
        "test_kept": at_point["real_accuracy"],
        "wild_called_fake": 1 - m_wild["real_accuracy"],
        "cost": 2.0 if idea["tta"] else 1.0,
    }
    # leave-one-generator-out: real + StyleGAN1 only
    seen = "StyleGAN1"
    logo = fit((y == 0) | (gen == seen), "logo")
    p_logo = scores(logo, F, F_mirror, have)
    val_seen = val & ((y == 0) | (gen == seen))
    t_logo = choose_operating_point(p_logo[val_seen], y[val_seen])["threshold"]
    worst = []
    for unseen in sorted(set(gen[y == 1]) - {seen}):
        rows = test & ((y == 0) | (gen == unseen))
        if (y[rows] == 1).any():
            m = evaluate_scores(y[rows], p_logo[rows], t_logo)
            worst.append((m["auc"], m["fake_accuracy"], unseen))
    result["logo_auc_min"] = min(w[0] for w in worst) if worst else None
    result["logo_caught_min"] = min(w[1] for w in worst) if worst else None
    result["logo_worst"] = min(worst)[2] if worst else None
    # perturbed test copies, against clean test at the same point
    drops = {"auc": 0.0, "caught": 0.0, "kept": 0.0}
    y_test = y[test]
    for name, (P, P_mirror, found) in perturbed.items():
        q = scores(predict, view(P), view(P_mirror), found)
        m = evaluate_scores(y_test, q, t)
        drops["auc"] = max(drops["auc"], m_test["auc"] - m["auc"])
        drops["caught"] = max(drops["caught"], at_point["fake_accuracy"] - m["fake_accuracy"])
        drops["kept"] = max(drops["kept"], at_point["real_accuracy"] - m["real_accuracy"])
        result[f"perturbed_{name}_auc"] = m["auc"]
    result |= {f"max_drop_{k}": v for k, v in drops.items()}
    return result


def _slices() -> list:
    """Each tap's columns among the channel counts (their sums are the paper's layer counts)."""
    bb = get_backbone("sface").untrained()
    coverage = NeuronCoverage(bb.model, bb.taps(), "channel", "raw", bb.activations)
    return coverage.feature_slices


def markdown(results: list[dict], limit) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    best = max(results, key=lambda r: r["val_auc"])
    lines = [
        "# Detection v2: first study (SFace channel counts)",
        "",
        "Made by `python benchmarks/detection_v2.py"
        + (f" --limit {limit}" if limit else "")
        + " --markdown docs/detection_v2.md`; the protocol is in the script's docstring. "
        "Chosen on val AUC only; the other columns are for reading, not choosing. Caught / "
        "kept / wild: at the threshold chosen on val for 1% false alarms. LOGO: trained on "
        "real + StyleGAN1, worst unseen generator. Drops: the largest over jpeg:50, blur:1, "
        "noise:5 and resize:0.5 test copies. Cost: feature extraction per face relative to "
        "one counted forward pass.",
        "",
        "| idea | val AUC | val Brier | test AUC | test acc @0.5 | caught | kept | wild/real "
        "called fake | worst LOGO AUC | LOGO caught | AUC drop | caught drop | kept drop "
        "| cost |",
        "|---|" + "---|" * 13,
    ]
    for r in results:
        mark = " **(best on val)**" if r is best else ""
        lines.append(
            f"| {r['idea']}{mark} | {num(r['val_auc'], 4)} | {num(r['val_brier'], 4)} | "
            f"{num(r['test_auc'], 4)} | {pct(r['test_accuracy'])} | {pct(r['test_caught'])} | "
            f"{pct(r['test_kept'])} | {pct(r['wild_called_fake'])} | "
            f"{num(r['logo_auc_min'])} ({r['logo_worst']}) | {pct(r['logo_caught_min'])} | "
            f"{num(r['max_drop_auc'])} | {pct(r['max_drop_caught'])} | "
            f"{pct(r['max_drop_kept'])} | {r['cost']:.0f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

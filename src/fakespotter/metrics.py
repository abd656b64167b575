"""Detection metrics: accuracy per class, ROC AUC, average precision, equal error rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fakespotter.rows import FAKE_THRESHOLD


@dataclass(frozen=True)
class Metrics:
    n_real: int
    n_fake: int
    accuracy: float | None
    real_accuracy: float | None
    fake_accuracy: float | None
    auc: float | None
    ap: float | None
    eer: float | None


def metrics(y: np.ndarray, p_fake: np.ndarray, threshold: float = FAKE_THRESHOLD) -> Metrics:
    """Accuracy split by class, ROC AUC, average precision and equal error rate."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p_fake) >= threshold).astype(int)
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    real_acc = float((pred[y == 0] == 0).mean()) if n_real else None
    fake_acc = float((pred[y == 1] == 1).mean()) if n_fake else None
    acc = float((pred == y).mean()) if len(y) else None
    auc = ap = eer = None
    if n_real and n_fake:
        auc = float(roc_auc_score(y, p_fake))
        ap = float(average_precision_score(y, p_fake))
        fpr, tpr, _ = roc_curve(y, p_fake)
        fnr = 1 - tpr
        i = int(np.argmin(np.abs(fnr - fpr)))
        eer = float((fpr[i] + fnr[i]) / 2)
    return Metrics(n_real, n_fake, acc, real_acc, fake_acc, auc, ap, eer)


def evaluate_scores(labels, p_fake, threshold: float = FAKE_THRESHOLD) -> dict:
    """The evaluation report's numbers as a plain dict (JSON keys of ``fakespotter evaluate``)."""
    return asdict(metrics(np.asarray(labels, int), np.asarray(p_fake, float), threshold))

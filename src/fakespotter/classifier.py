"""The classifier of a FakeSpotter: standardize -> linear SVM -> Platt calibration, on a table of
features (any 2-D numeric table: it passes scikit-learn's estimator checks).

Its one speed trick stays behind the standard API: the SVM is fitted in its dual form on a
precomputed Gram matrix of the standardized features. With thousands of coverage columns and
fewer training faces that is far faster than the primal, and every C and every fold of the
search reuses the one matrix product; the weights are then brought back to the primal
(``coef_``), so scoring is one dot product.

Calibration is Platt's (as ``CalibratedClassifierCV(method="sigmoid")`` does it): a sigmoid
fitted on out-of-fold SVM margins (``margin``; ``decision_function`` is the calibrated
log-odds, so that it, ``predict`` and ``predict_proba`` agree), with Platt's prior correction of the targets
((N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives), so that a small training set
does not give probabilities of exactly 0 or 1.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, check_cv
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

DEFAULT_CS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class CalibratedLinearSVM(ClassifierMixin, BaseEstimator):
    """Binary linear SVM with calibrated probabilities, C chosen by cross-validated ROC AUC.

    Args:
        Cs: regularization strengths tried; the best by cross-validated ROC AUC on the
            training data wins (ties, within 1e-4, go to the smaller C: stronger
            regularization).
        cv: folds for choosing C and for the calibration's out-of-fold scores (fewer when
            the smaller class has fewer rows, or groups), or a splitter or the splits
            themselves, as scikit-learn's ``cv`` parameters take them.
        random_state: seed of the folds' shuffle.

    Attributes (after ``fit``): ``classes_`` (the two labels; the second is the positive
    class, "fake" for a FakeSpotter), ``n_features_in_``, ``scaler_mean_`` and
    ``scaler_scale_`` (the standardization), ``coef_`` and ``intercept_`` (the hyperplane
    on standardized features), ``C_`` and ``cv_auc_`` (the chosen C and its cross-validated
    AUC), ``calibration_`` (Platt's (a, b): P = sigmoid(a * decision + b)).
    """

    def __init__(self, Cs=DEFAULT_CS, cv=5, random_state=0):
        self.Cs = Cs
        self.cv = cv
        self.random_state = random_state

    @classmethod
    def fitted(
        cls,
        *,
        coef,
        intercept: float,
        scaler_mean,
        scaler_scale,
        calibration: tuple[float, float],
        C: float,
        cv_auc: float,
        classes=(0, 1),
        **params,
    ) -> CalibratedLinearSVM:
        """A classifier with these fitted values (a model file's), no fit needed."""
        clf = cls(**params)
        clf.classes_ = np.asarray(classes)
        clf.coef_ = np.asarray(coef, np.float64)
        clf.intercept_ = float(intercept)
        clf.scaler_mean_ = np.asarray(scaler_mean, np.float64)
        clf.scaler_scale_ = np.asarray(scaler_scale, np.float64)
        clf.calibration_ = (float(calibration[0]), float(calibration[1]))
        clf.C_, clf.cv_auc_ = float(C), float(cv_auc)
        clf.n_features_in_ = len(clf.coef_)
        return clf

    def fit(self, X, y, sample_weight=None, *, groups=None) -> CalibratedLinearSVM:
        """``groups``: rows with the same group (a photo and its augmented copies) stay in the
        same fold, so C and the calibration are chosen on unseen photos. ``sample_weight``:
        each row's weight in the SVM's loss and in the AUC that chooses C (e.g. every fake
        source weighing the same however many photos it has); the calibration stays
        unweighted, so probabilities keep the training mix's meaning."""
        # float32 stays float32: the scaler is computed as it always was (identical models)
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, y = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            n = len(self.classes_)
            raise ValueError(
                f"Only binary classification is supported; got {n} class{'es' * (n != 1)}: "
                f"{self.classes_[:5].tolist()}"
            )
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        if w is not None and (w < 0).any():
            raise ValueError("sample_weight must be >= 0")
        if not len(self.Cs):
            raise ValueError("Cs must hold at least one regularization strength")
        self.scaler_mean_ = X.mean(0).astype(np.float64)
        scale = X.std(0).astype(np.float64)
        self.scaler_scale_ = np.where(scale > 0, scale, 1.0)  # constant features stay at 0
        Z = (X - self.scaler_mean_) / self.scaler_scale_
        K = _gram(Z)
        splits = self._folds(Z, y, groups)
        best: tuple[float, float, np.ndarray] | None = None
        for C in sorted(self.Cs):
            scores = np.zeros(len(y))
            for train, test in splits:
                svm = _svm(C).fit(
                    K[np.ix_(train, train)], y[train], None if w is None else w[train]
                )
                scores[test] = svm.decision_function(K[np.ix_(test, train)])
            auc = roc_auc_score(y, scores, sample_weight=w)
            if best is None or auc > best[0] + 1e-4:
                best = (auc, C, scores)
        assert best is not None  # Cs is not empty
        self.cv_auc_, self.C_, oof = best
        self.calibration_ = platt(oof, y)
        svm = _svm(self.C_).fit(K, y, w)
        # back to the primal: w = sum_i alpha_i y_i z_i over the support vectors
        self.coef_ = (svm.dual_coef_ @ Z[svm.support_]).ravel().astype(np.float64)
        self.intercept_ = float(svm.intercept_[0])
        self.n_features_in_ = int(X.shape[1])
        return self

    def _folds(self, Z: np.ndarray, y: np.ndarray, groups) -> list:
        if not isinstance(self.cv, numbers.Integral):  # a splitter or the splits themselves
            return list(check_cv(self.cv, y, classifier=True).split(Z, y, groups))
        # no more folds than the smaller class has rows (or groups), and at least 2, without
        # changing the cv parameter itself
        per_class = np.bincount(y if groups is None else _group_labels(y, groups), minlength=2)
        n_splits = max(2, min(self.cv, *per_class))
        if groups is None:
            folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
            return list(folds.split(Z, y))
        folds = StratifiedGroupKFold(n_splits, shuffle=True, random_state=self.random_state)
        return list(folds.split(Z, y, groups))

    def margin(self, X) -> np.ndarray:
        """Signed distance to the SVM hyperplane; positive means the second class (fake)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        # a crafted model's huge coefficients overflow to inf or NaN: no warning,
        # predict_proba turns them into NaN scores
        with np.errstate(over="ignore", invalid="ignore"):
            return ((X - self.scaler_mean_) / self.scaler_scale_) @ self.coef_ + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """The calibrated log-odds of the second class, a * margin + b: positive exactly
        where ``predict_proba`` gives it more than 0.5, so ``predict``, ``predict_proba`` and
        this agree (an SVM's margin and Platt's probabilities need not)."""
        a, b = self._calibration()
        with np.errstate(over="ignore", invalid="ignore"):
            return a * self.margin(X) + b

    def predict_proba(self, X) -> np.ndarray:
        """Calibrated N x 2 probabilities of ``classes_``; NaN for a row whose calibrated
        decision is not finite (a model whose coefficients overflow: no score)."""
        z = self.decision_function(X)
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.where(np.isfinite(z), 1.0 / (1.0 + np.exp(-z)), np.nan)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """The second class where its calibrated probability is over 0.5 (a FakeSpotter
        labels at its own operating point instead)."""
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    def _calibration(self) -> tuple[float, float]:
        check_is_fitted(self)
        return self.calibration_

    def in_scaler(self, columns, mean, scale) -> CalibratedLinearSVM:
        """This classifier, fitted on the feature ``columns`` only, as the same decision on all
        the features standardized by (``mean``, ``scale``): other columns weigh 0. Exact:
        ((x - m') / s') . w + b = ((x - m) / s) . (w s / s') + b + ((m - m') / s') . w."""
        check_is_fitted(self)
        columns = np.asarray(columns, dtype=np.int64)
        mean, scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        w, m2, s2 = self.coef_, self.scaler_mean_, self.scaler_scale_
        coef = np.zeros(len(mean))
        coef[columns] = w * scale[columns] / s2
        return CalibratedLinearSVM.fitted(
            coef=coef,
            intercept=float(self.intercept_ + np.sum((mean[columns] - m2) / s2 * w)),
            scaler_mean=mean,
            scaler_scale=scale,
            calibration=self.calibration_,
            C=self.C_,
            cv_auc=self.cv_auc_,
            classes=self.classes_,
            **self.get_params(),
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


def platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling with his prior correction: (a, b) of P(y = 1) = sigmoid(a * score + b),
    by logistic regression on the soft targets, each row entered once per class with its
    target's weight (the same minimum as the soft-target log loss)."""
    from sklearn.linear_model import LogisticRegression

    s, y = np.asarray(scores, np.float64).reshape(-1, 1), np.asarray(y)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    target = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    lr = LogisticRegression(C=1e6).fit(
        np.r_[s, s],
        np.r_[np.ones(len(s)), np.zeros(len(s))],
        sample_weight=np.r_[target, 1 - target],
    )
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def _group_labels(y: np.ndarray, groups) -> np.ndarray:
    """The label of each group (a photo and its copies share one)."""
    _, first = np.unique(np.asarray(groups), return_index=True)
    return y[first]


def _svm(C: float) -> SVC:
    return SVC(kernel="precomputed", C=C, cache_size=1000)


def _gram(Z: np.ndarray) -> np.ndarray:
    Z32 = np.ascontiguousarray(Z, dtype=np.float32)
    return (Z32 @ Z32.T).astype(np.float64)

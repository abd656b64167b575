"""The FakeSpotter detector: neuron-coverage features -> standardization -> linear SVM ->
Platt calibration, as a scikit-learn style estimator on aligned face crops.

``X`` is always a uint8 array of aligned face crops, N x S x S x 3 RGB, S the backbone's input
size (``fakespotter.faces`` makes them from photos); ``y`` is 1 for fake, 0 for real.

Feature variants (``variant``): the name of a coverage criterion in
``fakespotter.criteria.CRITERIA``, or ``embedding``:

* ``layer``: the paper's MNC feature, one count per tapped layer (Wang et al., Eq. 1-2).
* ``channel``: one count per output channel of each tapped layer, same per-layer thresholds.
* ``kmultisection``: per tapped layer, counts above ``m_l + z s_l`` for z = -1, 0, 1, 2.
* ``kmultisection-channel``: the same four thresholds per layer, counted per output channel
  (the shipped model's variant).
* any criterion registered later (``fakespotter.criteria.register_criterion``).
* ``embedding``: not a coverage criterion but the other feature source, the network's final
  output (the paper's Fig. 2 baseline); it has no taps and no thresholds.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.svm import SVC
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted
from tqdm import tqdm

from fakespotter.backbones import Backbone, get_backbone
from fakespotter.coverage import NeuronCoverage, counts_per_layer
from fakespotter.criteria import EMBEDDING, variants
from fakespotter.errors import UserError
from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR
from fakespotter.rows import FAKE_THRESHOLD, NO_FINITE_SCORE, label_for

NEURONS = ("raw", "activation")
NOVELTY_COMPONENTS = 50  # principal components of the novelty signal
LAYER_MEANS_KEY = "layer_means"  # training metadata: per-class mean counts for the web page
DEFAULT_CS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# A face's error when the model gives it no finite P(fake): a model file whose finite but huge
# coefficients overflow (inf - inf); its row gets no score and no label, never NaN as "real".


class FakeSpotter(ClassifierMixin, BaseEstimator):
    """Real-vs-fake face classifier on the neuron coverage of a face-recognition network.

    Args:
        backbone: a registered backbone name (``fakespotter.backbones.BACKBONES``: ``facenet``,
            ``dlib``, ``sface``, ``vggface``, ``openface``) or a loaded
            :class:`~fakespotter.backbones.Backbone`.
        variant: a coverage criterion (``layer``: the paper; ``channel``; ``kmultisection``;
            ``kmultisection-channel``; any registered one) or ``embedding`` (see module
            docstring).
        neuron: ``raw`` counts a tap's own output; ``activation`` the output of the
            nonlinearity that follows it.
        Cs: SVM regularization strengths tried; the best by cross-validated ROC AUC on the
            training data wins (ties go to the smaller C, the stronger regularization).
        cv: folds for choosing C and for the calibration's out-of-fold scores.
        batch_size: crops per forward pass; ``None`` for the backbone's fastest on a CPU
            (``Backbone.batch_size``, measured by benchmarks/speed.py).
        progress: show progress bars on stderr.
        taps: which layers to count: ``None`` for every conv and linear layer, an int ``k``
            for the first ``k`` in execution order, or a list of layer names. The forward
            pass stops after the deepest one, so fewer, earlier taps cost less (the paper's
            "keep only the valuable neurons").
        device: torch device of the network (``"cpu"``, ``"cuda"``, ...); ``None`` leaves
            the network where it is (CPU when loaded by name).
        random_state: seed of the cross-validation folds' shuffle.
        face_detector: the registered face detector (``registry.DETECTORS``) that finds
            faces in photos for ``face_cropper``; part of the model, since the crops it
            aligns are what the classifier learned.

    Attributes (after ``fit``, ``fit_features`` or ``load_model``):
        n_features_in_: number of feature columns the classifier sees (``transform``'s
            output width, ``len(coef_)``), not the pixels of a crop.
        threshold_, uncertain_: the operating point (``training.choose_operating_point``):
            P(fake) at which a face is labelled fake (default 0.5), and the (low, threshold)
            band labelled uncertain, or None.
        novelty_components_, novelty_scale_, novelty_threshold_: the novelty signal
            (``fit_novelty``) and the distance above which a face gets a warning.

    Pickling (and so ``ProcessPoolExecutor`` workers, ``copy.deepcopy``) keeps parameters
    and fitted attributes and drops the caches, which are rebuilt on first use: the
    coverage extractors, and a network loaded from a registered ``backbone`` name (reloaded
    from the weights cache, so the pickle stays small). A :class:`Backbone` object passed as
    ``backbone`` is a parameter and travels with the detector; its ``preprocess`` must then
    be picklable (a module-level function, not a closure).
    """

    # Rebuilt lazily by _backbone / _fitted_coverage / predict_proba_and_embed, so dropped
    # from pickles: NeuronCoverage holds a threading.local, and a loaded network is big.
    _CACHES = ("_coverage_cache", "_full_coverage_cache", "_moved", "_loaded_backbone")

    def __init__(
        self,
        backbone="sface",
        variant="channel",
        neuron="raw",
        Cs=DEFAULT_CS,
        cv=5,
        batch_size=None,
        progress=False,
        taps=None,
        device=None,
        random_state=0,
        face_detector=DEFAULT_FACE_DETECTOR,
    ):
        self.backbone = backbone
        self.variant = variant
        self.neuron = neuron
        self.Cs = Cs
        self.cv = cv
        self.batch_size = batch_size
        self.progress = progress
        self.taps = taps
        self.device = device
        self.random_state = random_state
        self.face_detector = face_detector

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in self._CACHES}

    # -- the network ---------------------------------------------------------------------

    def _backbone(self) -> Backbone:
        """The network, on ``device``. A Backbone passed in is never changed: when it must
        move to another device, the detector works on its own copy."""
        if isinstance(self.backbone, Backbone):
            loaded = self.backbone
            if self.device is not None and _device_of(loaded) != torch.device(self.device):
                moved: Backbone | None = getattr(self, "_moved", None)
                if moved is None or moved.name != loaded.name:
                    moved = replace(loaded, model=copy.deepcopy(loaded.model).to(self.device))
                    self._moved = moved
                return moved
            return loaded
        cached: Backbone | None = getattr(self, "_loaded_backbone", None)
        if cached is None or cached.name != self.backbone:
            cached = get_backbone(self.backbone).load(progress=self.progress)
            self._loaded_backbone = cached
        if self.device is not None and _device_of(cached) != torch.device(self.device):
            cached.model.to(self.device)  # the detector's own network: moved in place
        return cached

    def face_cropper(self, aligned: bool = False):
        """Turns a photo (H x W x 3 uint8) into this detector's aligned face crops."""
        from fakespotter.faces.pipeline import FaceCropper

        bb = self._backbone()
        return FaceCropper(
            bb.input_size,
            bb.alignment_template,
            aligned=aligned,
            detector=self.face_detector,
            progress=self.progress,
        )

    def _check_params(self) -> None:
        if self.variant not in variants():
            raise UserError(f"variant must be one of {', '.join(variants())}, not {self.variant!r}")
        if self.neuron not in NEURONS:
            raise UserError(f"neuron must be one of {', '.join(NEURONS)}, not {self.neuron!r}")

    def _batches(self, X: np.ndarray, desc: str) -> Iterator[torch.Tensor]:
        bb = self._backbone()
        size = self.batch_size or bb.batch_size
        steps = range(0, len(X), size)
        for start in tqdm(
            steps,
            desc=desc,
            unit="batch",
            disable=not self.progress,
            file=sys.stderr,
            delay=1.0,
            leave=False,
        ):
            yield bb.preprocess(X[start : start + size])

    def _selected_taps(self) -> list[str]:
        """The ``taps`` parameter as layer names in execution order."""
        names = [t.name for t in self._backbone().taps()]
        if self.taps is None:
            return names
        if isinstance(self.taps, (int, np.integer)) and not isinstance(self.taps, bool):
            if not 1 <= self.taps <= len(names):
                raise UserError(f"taps must be between 1 and {len(names)}, not {self.taps}")
            return names[: self.taps]
        wanted = [self.taps] if isinstance(self.taps, str) else list(self.taps)
        unknown = [n for n in wanted if n not in names]
        if unknown or not wanted:
            raise UserError(
                f"backbone {self._backbone().name} has no layer {unknown[0]!r}"
                if unknown
                else "taps must name at least one layer"
            )
        return [n for n in names if n in set(wanted)]

    def _coverage(self, taps) -> NeuronCoverage:
        """Counting over ``taps`` only; the forward pass stops after the deepest of them."""
        bb = self._backbone()
        by_name = {t.name: t for t in bb.taps()}
        unknown = [n for n in taps if n not in by_name]
        if unknown:
            raise UserError(f"backbone {bb.name} has no layer {unknown[0]!r}")
        return NeuronCoverage(
            bb.model,
            [by_name[n] for n in taps],
            self.variant,
            self.neuron,
            bb.activations,
            stop_after_last_tap=True,
        )

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X)
        size = self._backbone().input_size
        if X.size == 0:  # a photo without faces: no crops, no rows
            return np.zeros((0, size, size, 3), np.uint8)
        if X.dtype != np.uint8 or X.ndim != 4 or X.shape[1:] != (size, size, 3):
            raise ValueError(
                f"X must be uint8 face crops N x {size} x {size} x 3, got {X.dtype} {X.shape}"
            )
        return X

    # -- features ------------------------------------------------------------------------

    def fit_thresholds(self, X) -> FakeSpotter:
        """Eq. 1: per-layer mean neuron output over ``X`` (real and fake together)."""
        self._check_params()
        X = self._check_X(X)
        if self.variant == EMBEDDING:
            self.taps_, self.thresholds_ = [], np.zeros(0)
            return self
        coverage = self._coverage(self._selected_taps()).fit(self._batches(X, "thresholds"))
        self.taps_ = [t.name for t in coverage.taps]
        assert coverage.thresholds_ is not None  # fit() sets them
        self.thresholds_ = coverage.thresholds_
        return self

    def _fitted_coverage(self) -> NeuronCoverage:
        """The extractor for the fitted taps and thresholds, built once: building it names
        every feature (35k for FaceNet channels), too slow to repeat per batch."""
        key = (
            id(self._backbone()),
            tuple(self.taps_),
            self.variant,
            self.neuron,
            self.thresholds_.tobytes(),
        )
        cached = getattr(self, "_coverage_cache", None)
        if cached is None or cached[0] != key:
            coverage = self._coverage(self.taps_)
            coverage.thresholds_ = self.thresholds_
            self._coverage_cache = cached = (key, coverage)
        return cached[1]

    def transform(self, X) -> np.ndarray:
        """Feature vectors (float32, one row per crop) for fitted thresholds."""
        check_is_fitted(self, "thresholds_")
        X = self._check_X(X)
        if self.variant == EMBEDDING:
            model = self._backbone().model
            device = next(model.parameters()).device
            with torch.inference_mode():
                parts = [
                    model(x.to(device)).float().cpu().numpy()
                    for x in self._batches(X, "embeddings")
                ]
        else:
            coverage = self._fitted_coverage()
            parts = [coverage.transform(x) for x in self._batches(X, "coverage")]
        if parts:
            return np.concatenate(parts)
        n_features = len(self.coef_) if hasattr(self, "coef_") else 0
        return np.zeros((0, n_features), np.float32)

    def feature_slices(self) -> dict[str, slice]:
        """Tap name -> its columns in ``transform``'s output (coverage variants)."""
        check_is_fitted(self, "taps_")
        if self.variant == EMBEDDING:
            raise UserError("an embedding model has no per-layer coverage")
        return dict(self._fitted_coverage().feature_slices)

    def layer_counts(self, features: np.ndarray) -> np.ndarray:
        """N x L activated neurons per tapped layer (the paper's Fig. 3 quantity)."""
        coverage = self._fitted_coverage()  # the criterion says how its columns make a count
        return counts_per_layer(features, self.feature_slices(), coverage.criterion)

    def layer_means(self, features: np.ndarray, y) -> dict:
        """Mean per-layer counts of the real (y = 0) and fake (y = 1) rows of ``features``;
        stored in a model file's training metadata under ``LAYER_MEANS_KEY``."""
        counts, y = self.layer_counts(features), np.asarray(y)
        return {
            "layers": list(self.taps_),
            "real": counts[y == 0].mean(0).tolist(),
            "fake": counts[y == 1].mean(0).tolist(),
        }

    # -- classifier ----------------------------------------------------------------------

    def fit(self, X, y, groups=None) -> FakeSpotter:
        """Thresholds, features, then the classifier, all from the training data alone;
        ``groups`` as in ``fit_features``."""
        self.fit_transform(X, y, groups=groups)
        return self

    def fit_transform(self, X, y, groups=None) -> np.ndarray:
        """``fit``, returning the training crops' features (one extraction pass, not two)."""
        y = _check_y(y, len(X))
        features = self.fit_thresholds(X).transform(X)
        self.fit_features(features, y, groups=groups)
        return features

    def fit_features(self, F: np.ndarray, y, groups=None, sample_weight=None) -> FakeSpotter:
        """Fit scaler, SVM and calibration on precomputed features (thresholds already fit).

        ``groups``: rows with the same group (a photo and its augmented copies) stay in the
        same cross-validation fold, so C and the calibration are chosen on unseen photos.
        ``sample_weight``: each row's weight in the SVM's loss and in the cross-validated AUC
        that chooses C (e.g. every fake source weighing the same however many photos it has);
        the calibration stays unweighted, so probabilities keep the training mix's meaning.
        """
        y = _check_y(y, len(F))
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w is not None and (w.shape != (len(y),) or not np.all(np.isfinite(w)) or (w < 0).any()):
            raise ValueError(f"sample_weight must be {len(y)} finite weights >= 0")
        # a new classifier: the operating point and novelty signal of an earlier fit are void
        for name in ("novelty_components_", "novelty_scale_", "novelty_threshold_"):
            self.__dict__.pop(name, None)
        self.threshold_ = FAKE_THRESHOLD
        self.uncertain_: tuple[float, float] | None = None
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = int(F.shape[1])
        self.scaler_mean_ = F.mean(0).astype(np.float64)
        scale = F.std(0).astype(np.float64)
        self.scaler_scale_ = np.where(scale > 0, scale, 1.0)  # constant features stay at 0
        Z = (F - self.scaler_mean_) / self.scaler_scale_
        # A linear SVM in its dual form on the Gram matrix: with thousands of coverage
        # features and fewer images this is far faster than the primal, and every C and
        # fold reuses the one matrix product.
        K = _gram(Z)
        # no more folds than the smaller class has photos (a small training set), without
        # changing the cv parameter itself
        n_splits = max(
            2,
            min(
                self.cv,
                *np.bincount(y if groups is None else _group_labels(y, groups), minlength=2),
            ),
        )
        if groups is None:
            splits = list(
                StratifiedKFold(
                    n_splits=n_splits, shuffle=True, random_state=self.random_state
                ).split(Z, y)
            )
        else:
            splits = list(
                StratifiedGroupKFold(
                    n_splits=n_splits, shuffle=True, random_state=self.random_state
                ).split(Z, y, groups)
            )
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
        if best is None:
            raise ValueError("Cs must hold at least one regularization strength")
        self.cv_auc_, self.C_, oof = best
        self.calibration_ = _platt(oof, y)
        svm = _svm(self.C_).fit(K, y, w)
        # back to the primal: w = sum_i alpha_i y_i z_i over the support vectors
        self.coef_ = (svm.dual_coef_ @ Z[svm.support_]).ravel().astype(np.float64)
        self.intercept_ = float(svm.intercept_[0])
        return self

    def decision_function(self, X=None, *, features: np.ndarray | None = None) -> np.ndarray:
        """Signed distance to the SVM hyperplane; positive means fake."""
        check_is_fitted(self, "coef_")
        F = self.transform(X) if features is None else features
        if F.ndim != 2 or F.shape[1] != len(self.coef_):
            raise ValueError(f"expected {len(self.coef_)} features per crop, got shape {F.shape}")
        # a crafted model's huge coefficients overflow to inf or NaN: no warning, predict_proba
        # turns them into NaN scores
        with np.errstate(over="ignore", invalid="ignore"):
            return ((F - self.scaler_mean_) / self.scaler_scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, X=None, *, features: np.ndarray | None = None) -> np.ndarray:
        """Calibrated N x 2 probabilities: column 0 real, column 1 fake; NaN for a crop whose
        calibrated decision is not finite (a model whose coefficients overflow: no score)."""
        check_is_fitted(self, "calibration_")
        a, b = self.calibration_
        d = self.decision_function(X, features=features)
        with np.errstate(over="ignore", invalid="ignore"):
            z = a * d + b
            p_fake = np.where(np.isfinite(z), 1.0 / (1.0 + np.exp(-z)), np.nan)
        return np.column_stack([1.0 - p_fake, p_fake])

    def predict_proba_and_embed(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``predict_proba(X)`` and the N x D L2-normalised face embeddings (the network's
        final output), from one forward pass per batch; video tracking uses the embeddings
        to tell whether two faces are the same person.

        The coverage extractor here runs the whole network (``predict_proba``'s stops after
        the deepest tap), so pruned taps still cost one pass, not a pruned pass plus a plain
        one. Same counts: the taps see the same inputs either way.
        """
        check_is_fitted(self, "calibration_")
        F, E = self._features_and_embeddings(X)
        if not len(F):  # no crops: no rows
            return np.zeros((0, 2)), E
        return self.predict_proba(features=F), E

    def _features_and_embeddings(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``transform(X)`` and the L2-normalised embeddings, from one forward pass."""
        X = self._check_X(X)
        if self.variant == EMBEDDING:  # the features are the embedding
            F = self.transform(X)
            E = F.astype(np.float32)
        else:
            coverage = self._fitted_coverage()
            cached = getattr(self, "_full_coverage_cache", None)
            if cached is None or cached[0] is not coverage:  # rebuilt when the fitted one is
                # building it names every feature: too slow to repeat per call
                cached = (
                    coverage,
                    coverage.subset([t.name for t in coverage.taps], stop_after_last_tap=False),
                )
                self._full_coverage_cache = cached
            features, outputs = [], []
            for x in self._batches(X, "coverage"):
                f, out = cached[1].transform(x, return_output=True)
                features.append(f)
                outputs.append(out.float().reshape(len(x), -1).cpu().numpy())
            if not features:  # no crops: no rows
                return np.zeros((0, len(self.coef_)), np.float32), np.zeros((0, 0), np.float32)
            F, E = np.concatenate(features), np.concatenate(outputs)
        norms = np.linalg.norm(E, axis=1, keepdims=True)
        return F, E / np.maximum(norms, 1e-12)

    def predict(self, X=None, *, features: np.ndarray | None = None) -> np.ndarray:
        """1 (fake) where P(fake) reaches the operating threshold, else 0."""
        p = self.predict_proba(X, features=features)[:, 1]
        return (p >= getattr(self, "threshold_", FAKE_THRESHOLD)).astype(int)

    # -- the operating point and the novelty signal ----------------------------------------

    def labels(self, p_fake: np.ndarray) -> list[str | None]:
        """``rows.label_for`` of each score at this model's operating point (``threshold_``,
        ``uncertain_``); None for a score that is not finite (no score, no label)."""
        threshold = getattr(self, "threshold_", FAKE_THRESHOLD)
        band = getattr(self, "uncertain_", None)
        low = None if band is None else band[0]
        return [
            label_for(p, threshold, low) if np.isfinite(p) else None
            for p in np.asarray(p_fake, dtype=np.float64)
        ]

    def fit_novelty(self, F: np.ndarray, n_components: int = NOVELTY_COMPONENTS) -> FakeSpotter:
        """Learn the training faces' feature distribution: the top principal components of
        the standardized features and the spread along each (``novelty`` measures a face's
        Mahalanobis distance in them)."""
        from sklearn.utils.extmath import randomized_svd

        check_is_fitted(self, "scaler_mean_")
        Z = ((F - self.scaler_mean_) / self.scaler_scale_).astype(np.float32)
        k = int(min(n_components, Z.shape[0] - 1, Z.shape[1]))
        _, sigma, components = randomized_svd(Z, k, random_state=self.random_state)
        scale = sigma / np.sqrt(max(1, len(Z) - 1))
        keep = scale > 1e-6 * scale.max()
        self.novelty_components_ = components[keep].astype(np.float32)
        self.novelty_scale_ = scale[keep].astype(np.float64)
        return self

    def novelty(self, features: np.ndarray) -> np.ndarray | None:
        """Each face's distance from the training faces (Mahalanobis, in the principal
        components ``fit_novelty`` kept); None for a model without that signal."""
        components = getattr(self, "novelty_components_", None)
        if components is None:
            return None
        Z = ((np.asarray(features) - self.scaler_mean_) / self.scaler_scale_).astype(np.float32)
        # torch's product, on the network's own threads: numpy's OpenBLAS threads, woken right
        # after a forward pass, were at times hundreds of times slower for this product on 2
        # cores (issue #29, docs/speed.md)
        with torch.inference_mode():
            product = torch.from_numpy(Z) @ torch.from_numpy(np.asarray(components)).T
        projected = product.numpy() / self.novelty_scale_
        return np.sqrt((projected.astype(np.float64) ** 2).mean(axis=1))

    def assess(self, crops: np.ndarray, *, embed: bool = False) -> dict:
        """Everything a result row says of each crop: P(fake), label, novelty and the novelty
        warning (None where the face is like the training faces or the model cannot tell),
        and ``errors``: ``NO_FINITE_SCORE`` for a crop without a finite P(fake) (NaN; its
        label is None), else None. ``embed``: also ``embeddings``, as
        ``predict_proba_and_embed`` gives them, from the same forward pass (videos)."""
        if embed:
            features, embeddings = self._features_and_embeddings(crops)
        else:
            features = self.transform(crops)
        p = self.predict_proba(features=features)[:, 1] if len(features) else np.zeros(0)
        novelty = self.novelty(features) if len(features) else None
        limit = getattr(self, "novelty_threshold_", None)
        warnings: list[str | None] = [None] * len(p)
        if novelty is not None and limit is not None:
            warnings = [
                f"unlike the faces the model was trained on (novelty {v:.2f} > {limit:.2f}): "
                "read its score with care"
                if v > limit
                else None
                for v in novelty
            ]
        return {
            "p_fake": p,
            "labels": self.labels(p),
            "novelty": novelty,
            "warnings": warnings,
            "features": features,
            "errors": [None if np.isfinite(v) else NO_FINITE_SCORE for v in p],
            **({"embeddings": embeddings} if embed else {}),
        }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a stack of images, not a table
        tags.transformer_tags = TransformerTags()  # transform: crops -> coverage features
        return tags


def _device_of(backbone: Backbone) -> torch.device:
    first = next(backbone.model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _group_labels(y: np.ndarray, groups) -> np.ndarray:
    """The label of each group (a photo and its copies share one)."""
    _, first = np.unique(np.asarray(groups), return_index=True)
    return y[first]


def _check_y(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have one label per crop ({n}), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ValueError("y must hold both labels: 0 (real) and 1 (fake)")
    return y.astype(int)


def _svm(C: float) -> SVC:
    return SVC(kernel="precomputed", C=C, cache_size=1000)


def _gram(Z: np.ndarray) -> np.ndarray:
    Z32 = np.ascontiguousarray(Z, dtype=np.float32)
    return (Z32 @ Z32.T).astype(np.float64)


def _platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: P(fake) = sigmoid(a * score + b), fit on out-of-fold SVM scores."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6).fit(scores.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])

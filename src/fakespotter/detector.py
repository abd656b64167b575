"""The FakeSpotter detector: a thin composition of four parts, each in its own module.

* ``features_``: :class:`~fakespotter.features.CoverageFeatures`, face crops to neuron-coverage
  counts (the network, its taps and their thresholds);
* ``classifier_``: :class:`~fakespotter.classifier.CalibratedLinearSVM`, standardize -> linear
  SVM -> Platt calibration: P(fake);
* ``novelty_``: :class:`~fakespotter.novelty.NoveltyModel` or None, how unlike the training
  faces a face is, and the limit above which its row gets a warning;
* ``operating_point_``: :class:`~fakespotter.operating_point.OperatingPoint`, the P(fake) at
  which a face is labelled fake and the band labelled uncertain.

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

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted

from fakespotter.backbones import Backbone
from fakespotter.classifier import DEFAULT_CS, CalibratedLinearSVM
from fakespotter.faces.registry import DEFAULT_FACE_DETECTOR
from fakespotter.features import CoverageFeatures
from fakespotter.novelty import NOVELTY_COMPONENTS, NoveltyModel
from fakespotter.operating_point import OperatingPoint
from fakespotter.rows import NO_FINITE_SCORE

__all__ = ["LAYER_MEANS_KEY", "FakeSpotter"]

LAYER_MEANS_KEY = "layer_means"  # training metadata: per-class mean counts for the web page
# the parameters of the feature transformer, passed on to it (the rest are the classifier's
# or the detector's own)
_FEATURE_PARAMS = ("backbone", "variant", "neuron", "batch_size", "progress", "taps", "device")
# settings a caller may change on a fitted detector (`detect` turns progress bars on, a scan
# its batch size): they reach the fitted transformer at its next use
_RUNTIME_PARAMS = ("batch_size", "progress", "device")


class FakeSpotter(ClassifierMixin, BaseEstimator):
    """Real-vs-fake face classifier on the neuron coverage of a face-recognition network.

    Args:
        backbone, variant, neuron, batch_size, progress, taps, device: the feature
            transformer's (:class:`~fakespotter.features.CoverageFeatures`).
        Cs, cv, random_state: the classifier's
            (:class:`~fakespotter.classifier.CalibratedLinearSVM`); ``random_state`` also
            seeds the novelty signal's SVD.
        face_detector: the registered face detector (``faces.registry.FACE_DETECTORS``) that
            finds faces in photos for ``face_cropper``; part of the model, since the crops it
            aligns are what the classifier learned.

    Fitted parts: ``features_`` (after ``fit_thresholds``), ``classifier_`` (after
    ``fit_features``), ``novelty_`` (after ``fit_novelty``; None without one) and
    ``operating_point_`` (0.5 and no band until ``set_operating_point``). The attributes
    below read them: ``taps_``, ``thresholds_``, ``coef_``, ``C_``, ``cv_auc_``,
    ``n_features_in_``, ``classes_``, ``threshold_``, ``uncertain_``,
    ``novelty_threshold_``. ``training_``: what a model file says of its training.
    """

    features_: CoverageFeatures
    classifier_: CalibratedLinearSVM
    novelty_: NoveltyModel | None
    operating_point_: OperatingPoint
    training_: dict

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
        state.pop("_unfitted_features", None)  # rebuilt from the parameters
        return state

    @classmethod
    def from_parts(
        cls,
        features: CoverageFeatures,
        classifier: CalibratedLinearSVM,
        novelty: NoveltyModel | None = None,
        operating_point: OperatingPoint | None = None,
        training: dict | None = None,
        **params,
    ) -> FakeSpotter:
        """A fitted detector from fitted parts (a model file's); ``params`` as ``__init__``'s
        beyond the transformer's, which come from ``features``."""
        det = cls(**{k: features.get_params()[k] for k in _FEATURE_PARAMS}, **params)
        det.features_, det.classifier_ = features, classifier
        det.novelty_ = novelty
        det.operating_point_ = operating_point or OperatingPoint()
        det.training_ = dict(training or {})
        return det

    # -- the parts -------------------------------------------------------------------------

    def _features(self) -> CoverageFeatures:
        """The fitted transformer, or before ``fit_thresholds`` one from the parameters (to
        load the network and make a face cropper); the runtime settings passed on."""
        features = self.__dict__.get("features_")
        if features is None:
            params = {k: getattr(self, k) for k in _FEATURE_PARAMS}
            features = self.__dict__.get("_unfitted_features")
            if features is None or features.get_params() != params:
                features = self._unfitted_features = CoverageFeatures(**params)
        runtime = {k: getattr(self, k) for k in _RUNTIME_PARAMS}
        if {k: getattr(features, k) for k in _RUNTIME_PARAMS} != runtime:
            features.set_params(**runtime)
        return features

    def network(self) -> Backbone:
        """The face-recognition network, on ``device``."""
        return self._features().network()

    def face_cropper(self, aligned: bool = False):
        """Turns a photo (H x W x 3 uint8) into this detector's aligned face crops."""
        from fakespotter.faces.pipeline import FaceCropper

        bb = self.network()
        return FaceCropper(
            bb.input_size,
            bb.alignment_template,
            aligned=aligned,
            detector=self.face_detector,
            progress=self.progress,
        )

    # -- features ----------------------------------------------------------------------------

    def fit_thresholds(self, X) -> FakeSpotter:
        """Eq. 1: per-layer mean neuron output over ``X`` (real and fake together)."""
        features = CoverageFeatures(**{k: getattr(self, k) for k in _FEATURE_PARAMS})
        for earlier in (self.__dict__.get("features_"), self.__dict__.get("_unfitted_features")):
            loaded = None if earlier is None else earlier.__dict__.get("_loaded_backbone")
            if loaded is not None and loaded.name == self.backbone:  # loaded once is enough
                features._loaded_backbone = loaded
                break
        self.features_ = features.fit(X)
        return self

    def transform(self, X) -> np.ndarray:
        """Feature vectors (float32, one row per crop) for fitted thresholds."""
        check_is_fitted(self, "features_")
        return self._features().transform(X)

    def feature_slices(self) -> dict[str, slice]:
        """Tap name -> its columns in ``transform``'s output (coverage variants)."""
        check_is_fitted(self, "features_")
        return self._features().feature_slices()

    def layer_counts(self, features: np.ndarray) -> np.ndarray:
        """N x L activated neurons per tapped layer (the paper's Fig. 3 quantity)."""
        return self._features().layer_counts(features)

    def layer_means(self, features: np.ndarray, y) -> dict:
        """Mean per-layer counts of the real and fake rows (``LAYER_MEANS_KEY``)."""
        return self._features().layer_means(features, y)

    # -- classifier ------------------------------------------------------------------------

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
        """Fit the classifier on precomputed features (thresholds already fit); see
        :meth:`CalibratedLinearSVM.fit` for ``groups`` and ``sample_weight``. A new classifier
        voids the novelty signal and the operating point of an earlier fit."""
        y = _check_y(y, len(F))
        classifier = CalibratedLinearSVM(self.Cs, self.cv, self.random_state)
        self.classifier_ = classifier.fit(F, y, groups=groups, sample_weight=sample_weight)
        self.novelty_ = None
        self.operating_point_ = OperatingPoint()
        return self

    def set_classifier(self, classifier: CalibratedLinearSVM) -> FakeSpotter:
        """Replace the fitted classifier by one on the same features in the same scaler (an
        update from a kit): the novelty signal, expressed in that scaler, stays valid."""
        check_is_fitted(self, "classifier_")
        same = np.array_equal(classifier.scaler_mean_, self.classifier_.scaler_mean_)
        if not (same and np.array_equal(classifier.scaler_scale_, self.classifier_.scaler_scale_)):
            raise ValueError("the new classifier must standardize as the old one")
        self.classifier_ = classifier
        return self

    def standardize(self, F) -> np.ndarray:
        """Features in the classifier's scaler (what the novelty signal is expressed in)."""
        check_is_fitted(self, "classifier_")
        clf = self.classifier_
        return (np.asarray(F) - clf.scaler_mean_) / clf.scaler_scale_

    def decision_function(self, X=None, *, features: np.ndarray | None = None) -> np.ndarray:
        """Signed distance to the SVM hyperplane; positive means fake."""
        check_is_fitted(self, "classifier_")
        F = _checked(self.transform(X) if features is None else features, self.classifier_)
        return self.classifier_.margin(F) if len(F) else np.zeros(0)

    def predict_proba(self, X=None, *, features: np.ndarray | None = None) -> np.ndarray:
        """Calibrated N x 2 probabilities: column 0 real, column 1 fake; NaN for a crop whose
        calibrated decision is not finite (a model whose coefficients overflow: no score)."""
        check_is_fitted(self, "classifier_")
        F = _checked(self.transform(X) if features is None else features, self.classifier_)
        return self.classifier_.predict_proba(F) if len(F) else np.zeros((0, 2))

    def predict(self, X=None, *, features: np.ndarray | None = None) -> np.ndarray:
        """1 (fake) where P(fake) reaches the operating threshold, else 0."""
        p = self.predict_proba(X, features=features)[:, 1]
        return self._point().is_fake(p)

    def predict_proba_and_embed(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``predict_proba(X)`` and the N x D L2-normalised face embeddings (the network's
        final output), from one forward pass per batch; video tracking uses the embeddings
        to tell whether two faces are the same person.

        The coverage extractor here runs the whole network (``predict_proba``'s stops after
        the deepest tap), so pruned taps still cost one pass, not a pruned pass plus a plain
        one. Same counts: the taps see the same inputs either way.
        """
        check_is_fitted(self, "classifier_")
        F, E = self._features().transform_and_embed(X)
        if not len(F):  # no crops: no rows
            return np.zeros((0, 2)), E
        return self.predict_proba(features=F), E

    # -- the operating point and the novelty signal ----------------------------------------

    def _point(self) -> OperatingPoint:
        return self.__dict__.get("operating_point_") or OperatingPoint()

    def set_operating_point(self, point: OperatingPoint) -> FakeSpotter:
        """Label at ``point`` from now on (chosen on held-out photos, or a user's cut-off)."""
        if not isinstance(point, OperatingPoint):
            raise TypeError(f"expected an OperatingPoint, got {type(point).__name__}")
        self.operating_point_ = point
        return self

    def labels(self, p_fake: np.ndarray) -> list[str | None]:
        """The label of each score at this model's operating point; None for a score that is
        not finite (no score, no label)."""
        return self._point().labels(p_fake)

    def fit_novelty(self, F: np.ndarray, n_components: int = NOVELTY_COMPONENTS) -> FakeSpotter:
        """Learn the reference faces' feature distribution (``novelty`` measures a face's
        distance from it); the limit is set with ``set_novelty_limit``."""
        model = NoveltyModel(n_components=n_components, random_state=self.random_state)
        self.novelty_ = model.fit(self.standardize(F))
        return self

    def set_novelty_limit(self, limit: float, info: dict | None = None) -> FakeSpotter:
        """The novelty above which a face's row gets a warning, and where it was chosen."""
        model = self.__dict__.get("novelty_")
        if model is None:
            raise ValueError("no novelty signal to set a limit for: call fit_novelty first")
        model.set_limit(limit, info)
        return self

    def novelty(self, features: np.ndarray) -> np.ndarray | None:
        """Each face's distance from the training faces; None for a model without that
        signal."""
        model = self.__dict__.get("novelty_")
        return None if model is None else model.distance(self.standardize(features))

    def assess(self, crops: np.ndarray, *, embed: bool = False) -> dict:
        """Everything a result row says of each crop: P(fake), label, novelty and the novelty
        warning (None where the face is like the training faces or the model cannot tell),
        and ``errors``: ``NO_FINITE_SCORE`` for a crop without a finite P(fake) (NaN; its
        label is None), else None. ``embed``: also ``embeddings``, as
        ``predict_proba_and_embed`` gives them, from the same forward pass (videos)."""
        if embed:
            features, embeddings = self._features().transform_and_embed(crops)
        else:
            features = self.transform(crops)
        p = self.predict_proba(features=features)[:, 1] if len(features) else np.zeros(0)
        model = self.__dict__.get("novelty_")
        novelty = None
        warnings: list[str | None] = [None] * len(p)
        if model is not None and len(features):
            novelty = model.distance(self.standardize(features))
            warnings = model.warnings(novelty)
        return {
            "p_fake": p,
            "labels": self.labels(p),
            "novelty": novelty,
            "warnings": warnings,
            "features": features,
            "errors": [None if np.isfinite(v) else NO_FINITE_SCORE for v in p],
            **({"embeddings": embeddings} if embed else {}),
        }

    # -- the parts' fitted values, read-only -------------------------------------------------

    taps_ = property(lambda self: self._fitted("features_").taps_)
    thresholds_ = property(lambda self: self._fitted("features_").thresholds_)
    coef_ = property(lambda self: self._fitted("classifier_").coef_)
    C_ = property(lambda self: self._fitted("classifier_").C_)
    cv_auc_ = property(lambda self: self._fitted("classifier_").cv_auc_)
    n_features_in_ = property(lambda self: self._fitted("classifier_").n_features_in_)
    classes_ = property(lambda self: self._fitted("classifier_").classes_)
    threshold_ = property(lambda self: self._point().threshold)
    uncertain_ = property(lambda self: self._point().uncertain)

    @property
    def novelty_threshold_(self) -> float | None:
        model = self.__dict__.get("novelty_")
        return None if model is None else getattr(model, "limit_", None)

    def _fitted(self, part: str):
        value = self.__dict__.get(part)
        if value is None:  # hasattr() and check_is_fitted() read this as "not fitted yet"
            raise AttributeError(f"{type(self).__name__} has no fitted {part}")
        return value

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a stack of images, not a table
        tags.transformer_tags = TransformerTags()  # transform: crops -> coverage features
        return tags


def _checked(F: np.ndarray, classifier: CalibratedLinearSVM) -> np.ndarray:
    """Features of the classifier's width, in this detector's words."""
    F = np.asarray(F)
    if F.ndim != 2 or F.shape[1] != classifier.n_features_in_:
        raise ValueError(
            f"expected {classifier.n_features_in_} features per crop, got shape {F.shape}"
        )
    return F


def _check_y(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have one label per crop ({n}), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ValueError("y must hold both labels: 0 (real) and 1 (fake)")
    return y.astype(int)

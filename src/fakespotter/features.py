"""Face crops to neuron-coverage features: the transformer of a FakeSpotter.

``CoverageFeatures`` holds the face-recognition network (``backbone``, on ``device``), the
layers it taps and, once fitted, each tap's thresholds (Eq. 1 of Wang et al.: the mean of all
its outputs over the training crops, real and fake together; more per tap for the
k-multisection criteria). ``transform`` counts, per crop, the neurons above them (Eq. 2) as the
criterion (``variant``) says. ``X`` is a uint8 stack of aligned face crops, N x S x S x 3 RGB,
S the backbone's input size.

Variants: the name of a coverage criterion in ``fakespotter.criteria.CRITERIA`` (``layer``:
the paper; ``channel``; ``kmultisection``; ``kmultisection-channel``: the shipped model's;
any registered later), or ``embedding``: the network's final output (the paper's Fig. 2
baseline), which has no taps and no thresholds.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm import tqdm

from fakespotter.backbones import Backbone, get_backbone
from fakespotter.coverage import NeuronCoverage, counts_per_layer
from fakespotter.criteria import EMBEDDING, variants
from fakespotter.errors import UserError

NEURONS = ("raw", "activation")


class CoverageFeatures(TransformerMixin, BaseEstimator):
    """Coverage features of aligned face crops.

    Args:
        backbone: a registered backbone name (``fakespotter.backbones.BACKBONES``: ``facenet``,
            ``dlib``, ``sface``, ``vggface``, ``openface``) or a loaded
            :class:`~fakespotter.backbones.Backbone`.
        variant: a coverage criterion or ``embedding`` (see the module docstring).
        neuron: ``raw`` counts a tap's own output; ``activation`` the output of the
            nonlinearity that follows it.
        batch_size: crops per forward pass; ``None`` for the backbone's fastest on a CPU
            (``Backbone.batch_size``, measured by benchmarks/speed.py).
        progress: show progress bars on stderr.
        taps: which layers to count: ``None`` for every conv and linear layer, an int ``k``
            for the first ``k`` in execution order, or a list of layer names. The forward
            pass stops after the deepest one, so fewer, earlier taps cost less (the paper's
            "keep only the valuable neurons").
        device: torch device of the network (``"cpu"``, ``"cuda"``, ...); ``None`` leaves
            the network where it is (CPU when loaded by name).

    Attributes (after ``fit``): ``taps_`` (the tapped layers' names, in execution order) and
    ``thresholds_`` (one row of the criterion's parameters per tap).

    Pickling keeps parameters and fitted attributes and drops the caches, rebuilt on first
    use: the coverage extractors, and a network loaded from a registered ``backbone`` name
    (reloaded from the weights cache, so the pickle stays small). A :class:`Backbone` passed
    as ``backbone`` is a parameter and travels with it; its ``preprocess`` must then be
    picklable (a module-level function, not a closure).
    """

    # rebuilt lazily, so dropped from pickles: NeuronCoverage holds a threading.local, and a
    # loaded network is big
    _CACHES = (
        "_coverage_cache",
        "_full_coverage_cache",
        "_moved",
        "_loaded_backbone",
        "_embedding_width",
    )

    def __init__(
        self,
        backbone="sface",
        variant="channel",
        neuron="raw",
        batch_size=None,
        progress=False,
        taps=None,
        device=None,
    ):
        self.backbone = backbone
        self.variant = variant
        self.neuron = neuron
        self.batch_size = batch_size
        self.progress = progress
        self.taps = taps
        self.device = device

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in self._CACHES}

    @classmethod
    def fitted(cls, tapped: list[str], thresholds: np.ndarray, **params) -> CoverageFeatures:
        """A transformer with these tapped layers and thresholds (a model file's), no fit
        needed; ``params`` as ``__init__``'s."""
        features = cls(**params)
        features.taps_, features.thresholds_ = list(tapped), np.asarray(thresholds)
        return features

    # -- the network ---------------------------------------------------------------------

    def network(self) -> Backbone:
        """The network, on ``device``. A Backbone passed in is never changed: when it must
        move to another device, the transformer works on its own copy."""
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
            cached.model.to(self.device)  # the transformer's own network: moved in place
        return cached

    def _check_params(self) -> None:
        if self.variant not in variants():
            raise UserError(f"variant must be one of {', '.join(variants())}, not {self.variant!r}")
        if self.neuron not in NEURONS:
            raise UserError(f"neuron must be one of {', '.join(NEURONS)}, not {self.neuron!r}")

    def _batches(self, X: np.ndarray, desc: str) -> Iterator[torch.Tensor]:
        bb = self.network()
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
        names = [t.name for t in self.network().taps()]
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
                f"backbone {self.network().name} has no layer {unknown[0]!r}"
                if unknown
                else "taps must name at least one layer"
            )
        return [n for n in names if n in set(wanted)]

    def _coverage(self, taps) -> NeuronCoverage:
        """Counting over ``taps`` only; the forward pass stops after the deepest of them."""
        bb = self.network()
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
        size = self.network().input_size
        if X.size == 0:  # a photo without faces: no crops, no rows
            return np.zeros((0, size, size, 3), np.uint8)
        if X.dtype != np.uint8 or X.ndim != 4 or X.shape[1:] != (size, size, 3):
            raise ValueError(
                f"X must be uint8 face crops N x {size} x {size} x 3, got {X.dtype} {X.shape}"
            )
        return X

    # -- features ------------------------------------------------------------------------

    def fit(self, X, y=None) -> CoverageFeatures:
        """Eq. 1: per-layer mean neuron output over ``X`` (real and fake together; ``y`` is
        not used)."""
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

    def extractor(self) -> NeuronCoverage:
        """The extractor for the fitted taps and thresholds, built once: building it names
        every feature (35k for FaceNet channels), too slow to repeat per batch."""
        key = (
            id(self.network()),
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
            model = self.network().model
            device = next(model.parameters()).device
            with torch.inference_mode():
                parts = [
                    model(x.to(device)).float().cpu().numpy()
                    for x in self._batches(X, "embeddings")
                ]
        else:
            coverage = self.extractor()
            parts = [coverage.transform(x) for x in self._batches(X, "coverage")]
        if parts:
            return np.concatenate(parts)
        return np.zeros((0, self.n_features_out()), np.float32)

    def n_features_out(self) -> int:
        """The width of ``transform``'s output: the criterion's column count over the taps,
        or the network's output size (one blank crop's forward pass, once)."""
        check_is_fitted(self, "thresholds_")
        if self.variant != EMBEDDING:
            return self.extractor().n_features
        width = getattr(self, "_embedding_width", None)
        if width is None:
            size = self.network().input_size
            width = int(self.transform(np.zeros((1, size, size, 3), np.uint8)).shape[1])
            self._embedding_width = width
        return width

    def feature_slices(self) -> dict[str, slice]:
        """Tap name -> its columns in ``transform``'s output (coverage variants)."""
        check_is_fitted(self, "taps_")
        if self.variant == EMBEDDING:
            raise UserError("an embedding model has no per-layer coverage")
        return dict(self.extractor().feature_slices)

    def layer_counts(self, features: np.ndarray) -> np.ndarray:
        """N x L activated neurons per tapped layer (the paper's Fig. 3 quantity)."""
        coverage = self.extractor()  # the criterion says how its columns make a count
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

    def transform_and_embed(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``transform(X)`` and the L2-normalised embeddings, from one forward pass."""
        X = self._check_X(X)
        if self.variant == EMBEDDING:  # the features are the embedding
            F = self.transform(X)
            E = F.astype(np.float32)
        else:
            coverage = self.extractor()
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
                return np.zeros((0, coverage.n_features), np.float32), np.zeros((0, 0), np.float32)
            F, E = np.concatenate(features), np.concatenate(outputs)
        norms = np.linalg.norm(E, axis=1, keepdims=True)
        return F, E / np.maximum(norms, 1e-12)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a stack of images, not a table
        tags.requires_fit = True
        return tags


def _device_of(backbone: Backbone) -> torch.device:
    first = next(backbone.model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")

"""Neuron-coverage features (FakeSpotter's MNC criterion) for any torch model.

FakeSpotter (Wang et al.) describes an image by how many neurons of each layer
of a CNN fire above that layer's mean:

* Eq. 1: the threshold of layer ``l`` is ``m_l``, the mean of all neuron outputs
  of that layer over all training inputs (real and fake together).
* Eq. 2: the feature of layer ``l`` for input ``x`` is the number of neurons of
  ``l`` whose output is ``> m_l``.

A "neuron" is one element of the layer's per-image output tensor, so a conv
layer has ``channels x height x width`` neurons.  The ``"channel"`` variant
keeps one count per channel (summed over positions) instead of one per layer.

Everything here works on a plain ``nn.Module`` plus tap names: forward hooks
reduce each tapped output to a few numbers right away, so activations are never
stored, and results reach the host once per batch.

The rule that turns a tap's output into features is a coverage criterion
(``fakespotter.criteria``: ``layer``, ``channel``, ``kmultisection``, or one
registered later; its docstring says how to add one).  This module runs it: one
hooked forward pass per batch. The taps, their hooks and the tensor helpers criteria use live
in ``fakespotter.taps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from fakespotter.counting import Counter
from fakespotter.criteria import Criterion, get_criterion
from fakespotter.taps import ForwardHook, Tap, device_and_dtype, eval_mode, forward_hooks

NeuronKind = Literal["raw", "activation"]


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


class NeuronCoverage:
    """Neuron-coverage features of ``model`` at ``taps``, by one :class:`Criterion`.

    Args:
        model: any module; it is run in eval mode (flags restored afterwards).
        taps: layers to count, usually a subset of :func:`find_taps`; features
            come in this order.
        criterion: a name in :data:`CRITERIA` (``"layer"``: one count per tap;
            ``"channel"``: one count per channel of each tap, summed over
            positions; ...) or a :class:`Criterion` instance.
        neuron: ``"raw"`` uses the tap's own output; ``"activation"`` uses the
            output of ``activations[tap.name]`` (e.g. the ReLU after a conv).
            Taps missing from ``activations`` fall back to raw.  A name may end
            in ``@k`` to use the k-th call (0-based) of a module that runs
            several times per forward, e.g. a shared ReLU; default is call 0.
        thresholds: known fitted parameters, ``len(taps) x *criterion.param_shape``
            (one threshold per tap for ``layer`` and ``channel``; e.g. loaded from
            disk); skips :meth:`fit`.
        stop_after_last_tap: end each forward pass as soon as every tap has
            been seen, skipping the layers after the deepest tap.  Then the
            model's output is not available.
        counting: the counting engine (``fakespotter.counting``: ``auto``, ``kernel`` or
            ``torch``; default ``$FAKESPOTTER_COUNTING``, else ``auto``); all give the
            same features.
    """

    def __init__(
        self,
        model: nn.Module,
        taps: Sequence[Tap],
        criterion: str | Criterion = "layer",
        neuron: NeuronKind = "raw",
        activations: Mapping[str, str] | None = None,
        *,
        thresholds: Sequence[float] | np.ndarray | None = None,
        stop_after_last_tap: bool = False,
        counting: str | None = None,
    ) -> None:
        criterion = get_criterion(criterion)
        if neuron not in ("raw", "activation"):
            raise ValueError(f"neuron must be 'raw' or 'activation', not {neuron!r}")
        if not taps:
            raise ValueError("need at least one tap")
        names = [tap.name for tap in taps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tap names in {names}")
        self.model = model
        self.taps = list(taps)
        self.criterion = criterion
        self.neuron = neuron
        self.activations = dict(activations or {})
        self.stop_after_last_tap = stop_after_last_tap
        self.counter = Counter(counting)  # the criteria's counts and scratch buffers
        self.thresholds_: np.ndarray | None = None
        if thresholds is not None:
            self.thresholds_ = self._checked_thresholds(thresholds)

        # Where each tap's neurons are read: (module, call index).
        modules = dict(model.named_modules())
        self._sources: list[tuple[nn.Module, int]] = []
        for tap in self.taps:
            source = tap.name
            if neuron == "activation":
                source = self.activations.get(tap.name, tap.name)
            name, _, call = source.partition("@")
            if name not in modules:
                raise KeyError(f"tap {tap.name!r}: model has no module {name!r}")
            self._sources.append((modules[name], int(call) if call else 0))

        # Feature layout, in tap order.
        self.feature_names: list[str] = []
        self.feature_slices: dict[str, slice] = {}
        self._widths = [criterion.n_features(tap) for tap in self.taps]
        for tap, width in zip(self.taps, self._widths, strict=False):
            start = len(self.feature_names)
            self.feature_names += criterion.feature_names(tap)
            self.feature_slices[tap.name] = slice(start, len(self.feature_names))
            if len(self.feature_names) - start != width:
                raise ValueError(
                    f"criterion {criterion.name!r}: feature_names and n_features disagree"
                )

    @property
    def variant(self) -> str:
        """The criterion's name (the detector's ``variant``)."""
        return self.criterion.name

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def subset(
        self, tap_names: Iterable[str], *, stop_after_last_tap: bool = True
    ) -> NeuronCoverage:
        """Same model and fitted thresholds restricted to ``tap_names`` (in this object's tap order).

        Meant for a pruned extractor that only computes the taps a classifier uses.
        """
        wanted = set(tap_names)
        unknown = wanted - {tap.name for tap in self.taps}
        if unknown:
            raise KeyError(f"unknown taps: {sorted(unknown)}")
        keep = [i for i, tap in enumerate(self.taps) if tap.name in wanted]
        thresholds = None if self.thresholds_ is None else self.thresholds_[keep]
        return NeuronCoverage(
            self.model,
            [self.taps[i] for i in keep],
            self.criterion,
            self.neuron,
            self.activations,
            thresholds=thresholds,
            stop_after_last_tap=stop_after_last_tap,
            counting=self.counter.engine,
        )

    # -- fitting ---------------------------------------------------------

    def fit(self, batches: Iterable[torch.Tensor]) -> NeuronCoverage:
        """The criterion's parameters (for MNC, Eq. 1: per-tap mean of all neuron outputs
        over all images), in one streaming pass: statistics are summed over batches."""
        criterion = self.criterion
        sums: np.ndarray | None = None  # every tap's statistics, end to end
        counts = np.zeros(len(self.taps), dtype=np.int64)

        def reduce(i: int, out: torch.Tensor) -> torch.Tensor:
            return criterion.batch_stats(self.taps[i], out)

        for x in batches:
            if len(x) == 0:
                continue
            batch_stats, numels = self._run(x, reduce)[:2]
            lengths = [len(b) for b in batch_stats]
            flat = torch.cat(batch_stats).cpu().numpy()  # one transfer per batch
            sums = flat.astype(np.float64) if sums is None else sums + flat
            counts += numels
        if sums is None or not counts.any():  # sums is None only when counts are all 0
            raise ValueError("fit() got no images")
        bounds = np.cumsum([0, *lengths])
        self.thresholds_ = self._checked_thresholds(
            [
                criterion.fit_params(tap, sums[a:b], int(n))
                for tap, a, b, n in zip(self.taps, bounds[:-1], bounds[1:], counts, strict=False)
            ]
        )
        return self

    # -- features --------------------------------------------------------

    def transform(
        self, x: torch.Tensor, return_output: bool = False
    ) -> np.ndarray | tuple[np.ndarray, Any]:
        """N x n_features float32 features by the criterion (for MNC, Eq. 2: counts of
        neurons above their tap's threshold).

        With ``return_output=True`` also returns the model's output from the same
        forward pass (e.g. the embedding), as ``(features, output)``.
        """
        if self.thresholds_ is None:
            raise NotFittedError("NeuronCoverage is not fitted: call fit() or pass thresholds=")
        if return_output and self.stop_after_last_tap:
            raise ValueError(
                "return_output needs the full forward pass; set stop_after_last_tap=False"
            )
        criterion, params = self.criterion, self.thresholds_

        def reduce(i: int, out: torch.Tensor) -> torch.Tensor:
            tap = self.taps[i]
            if out.shape[tap.channel_dim] != tap.channels:
                raise ValueError(
                    f"tap {tap.name!r}: output has {out.shape[tap.channel_dim]} channels, expected {tap.channels}"
                )
            columns = criterion.features(tap, out, params[i], self.counter)
            if columns.shape != (len(out), self._widths[i]):  # a criterion's bug, said plainly
                raise ValueError(
                    f"criterion {criterion.name!r} gave {tuple(columns.shape)} features "
                    f"for tap {tap.name!r}, expected {(len(out), self._widths[i])}"
                )
            return columns

        n = len(x)
        if n == 0:
            features = np.zeros((0, self.n_features), dtype=np.float32)
            return (features, None) if return_output else features
        per_tap, _, output = self._run(x, reduce)
        features = torch.cat(per_tap, dim=1).cpu().numpy().astype(np.float32, copy=False)
        return (features, output) if return_output else features

    # -- one hooked forward pass -----------------------------------------

    def _run(
        self, x: torch.Tensor, reduce: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[int], Any]:
        """Forward ``x`` once; ``reduce(i, output)`` each tap's output inside its hook.

        Returns the reduced tensors and the element count of each tap's output
        (both in tap order), and the model output (None if stopped early).
        """
        n_taps = len(self.taps)
        results: list[torch.Tensor | None] = [None] * n_taps
        numels = [0] * n_taps
        calls: dict[nn.Module, int] = {}
        done = 0

        # Group taps by module so a module (e.g. a shared ReLU) has a single hook.
        wanted: dict[nn.Module, dict[int, list[int]]] = {}
        for i, (module, call) in enumerate(self._sources):
            wanted.setdefault(module, {}).setdefault(call, []).append(i)

        def make_hook(module: nn.Module) -> ForwardHook:
            by_call = wanted[module]

            def hook(mod: nn.Module, inputs: Any, out: Any) -> None:
                nonlocal done
                call = calls.get(module, 0)
                calls[module] = call + 1
                for i in by_call.get(call, ()):
                    if not isinstance(out, torch.Tensor):
                        raise TypeError(
                            f"tap {self.taps[i].name!r}: module output is {type(out).__name__}, not a tensor"
                        )
                    # Reduce now: in-place ops later in the net may overwrite `out`.
                    results[i] = reduce(i, out)
                    numels[i] = out.numel()
                    done += 1
                if self.stop_after_last_tap and done == n_taps:
                    raise _StopForward

            return hook

        device, dtype = device_and_dtype(self.model)
        x = x.to(device=device, dtype=dtype)
        output = None
        hooks = {module: make_hook(module) for module in wanted}
        with forward_hooks(hooks), eval_mode(self.model), torch.inference_mode():
            try:
                output = self.model(x)
            except _StopForward:
                pass
        missing = [self.taps[i].name for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"taps never ran in the forward pass: {missing}")
        return results, numels, output  # type: ignore[return-value]

    def _checked_thresholds(
        self, thresholds: Sequence[float] | Sequence[np.ndarray] | np.ndarray
    ) -> np.ndarray:
        values = np.asarray(thresholds, dtype=np.float64)
        shape = (len(self.taps), *self.criterion.param_shape)
        if values.shape != shape:
            raise ValueError(
                f"need thresholds of shape {shape} ({self.criterion.name!r} "
                f"parameters per tap), got shape {values.shape}"
            )
        return values


def counts_per_layer(
    features: np.ndarray,
    feature_slices: Mapping[str, slice],
    criterion: str | Criterion | None = None,
) -> np.ndarray:
    """N x L activated-neuron counts from N x F coverage features, by the criterion's
    ``layer_count`` (default: each layer's columns summed).

    A channel feature counts one channel's neurons above the *layer* threshold, so the sum
    over a layer's channels is that layer's count, the same number the layer variant gives.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be N x F, got shape {features.shape}")
    layer_count = (Criterion() if criterion is None else get_criterion(criterion)).layer_count
    columns = [layer_count(features[:, s]) for s in feature_slices.values()]
    if not columns:
        return np.zeros((len(features), 0))
    return np.stack(columns, axis=1)

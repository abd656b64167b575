"""Coverage criteria: the rules that turn a tapped layer's outputs into feature columns, in
one registry that the extractor (``fakespotter.coverage.NeuronCoverage``), the model file
(``fakespotter.detector``) and the CLI's ``--variant`` all read.

Built in:

* ``layer``: the paper's MNC (Wang et al., Eq. 1-2): threshold ``m_l`` = mean of all of a
  layer's outputs over the training images; one feature per layer, the count of its
  neurons ``> m_l``.
* ``channel``: the same threshold, one count per output channel (summed over positions).
* ``kmultisection``: per layer, counts above ``m_l + z s_l`` for z = -1, 0, 1, 2 (``s_l`` the
  standard deviation of its training outputs), a count form of DeepGauge's k-multisection.
* ``kmultisection-channel``: the same four thresholds per layer, counted per output channel
  (4 x the ``channel`` columns; the best on val in docs/results.md's Detection v2).

``embedding`` is not a criterion: it is the detector's other feature source, the network's
final output (the paper's Fig. 2 baseline), so the name is reserved; :func:`variants` lists
what ``FakeSpotter(variant=...)`` and ``--variant`` accept.

To add a criterion, write its class and register it, nothing else::

    from fakespotter.criteria import MeanThreshold, register_criterion

    @register_criterion
    class AtMostMean(MeanThreshold):     # fits m_l like the paper
        name = "atmost"
        def n_features(self, tap):
            return 1
        def features(self, tap, out, params, counter):
            above = counter.counts(out, tap.channel_dim, params).sum(1)  # N x 1
            return tap.neurons - above

Then ``FakeSpotter(variant="atmost")``, ``fakespotter train --variant atmost`` and its model
files work (a model file names its criterion; loading it needs the criterion registered).

This module imports no torch (the methods import it when they run), so ``--help`` and
listing the variants stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fakespotter.errors import UserError

if TYPE_CHECKING:
    import torch

    from fakespotter.counting import Counter
    from fakespotter.taps import Tap

__all__ = [
    "CRITERIA",
    "EMBEDDING",
    "ChannelMNC",
    "Criterion",
    "KMultisection",
    "KMultisectionChannel",
    "LayerMNC",
    "MeanThreshold",
    "get_criterion",
    "register_criterion",
    "unregister_criterion",
    "variants",
]

EMBEDDING = "embedding"  # the detector's network-output feature source, not a criterion


class Criterion:
    """A coverage rule: what one streaming pass fits per tap, and how one tap's output
    becomes feature columns. Instances hold no fitted state; fitted parameters live in the
    extractor (``NeuronCoverage.thresholds_``) and in model files.

    A subclass sets ``name`` (its ``--variant`` and model-file name) and ``param_shape``
    (the shape of one tap's fitted parameters, the same for every tap, so that a model file
    stores them as one ``taps x *param_shape`` array), and implements ``batch_stats``,
    ``fit_params``, ``n_features`` and ``features``; ``feature_names`` and ``layer_count``
    have defaults. :class:`MeanThreshold` supplies the paper's fitting.
    """

    name: ClassVar[str] = ""
    param_shape: ClassVar[tuple[int, ...]] = ()

    def batch_stats(self, tap: Tap, out: torch.Tensor) -> torch.Tensor:
        """1-D float64 tensor of statistics of one batch's output ``out``; the extractor adds
        them up over batches. Runs inside the forward hook: no host sync (``.item()``)."""
        raise NotImplementedError

    def fit_params(self, tap: Tap, stats: np.ndarray, numel: int) -> np.ndarray:
        """The tap's parameters (float64, ``param_shape``) from the summed ``stats`` and the
        number of output values they cover (images x neurons)."""
        raise NotImplementedError

    def n_features(self, tap: Tap) -> int:
        raise NotImplementedError

    def feature_names(self, tap: Tap) -> list[str]:
        n = self.n_features(tap)
        return [tap.name] if n == 1 else [f"{tap.name}:{j}" for j in range(n)]

    def features(
        self, tap: Tap, out: torch.Tensor, params: np.ndarray, counter: Counter
    ) -> torch.Tensor:
        """N x n_features(tap) float tensor from the batched output ``out`` and the tap's
        ``params``. Runs inside the forward hook (``out`` may be overwritten by in-place ops
        later). ``counter.counts(out, tap.channel_dim, thresholds)`` gives the N x C x L
        counts of ``out > threshold`` per channel in one pass (``fakespotter.counting``);
        for anything else, ``counter(like, dtype)`` lends a reused buffer shaped and strided
        like ``like``: reduce it before asking for another (``fakespotter.counting.above``)."""
        raise NotImplementedError

    def layer_count(self, columns: np.ndarray) -> np.ndarray:
        """N activated-neuron counts of one layer from its N x n_features columns (the web
        page's and the report's per-layer view). Default: the sum of the columns."""
        return columns.sum(axis=1)


class MeanThreshold(Criterion):
    """Fits the paper's Eq. 1: ``m_l``, the mean of all of a tap's outputs over all
    training images, one float64 per tap. Subclasses say what to count against it."""

    def batch_stats(self, tap, out):
        from fakespotter.taps import output_sum

        return output_sum(out, tap).reshape(1)

    def fit_params(self, tap, stats, numel):
        return np.asarray(stats[0] / numel, dtype=np.float64)


class LayerMNC(MeanThreshold):
    """The paper's Eq. 2: one count per tap, of its neurons ``> m_l``."""

    name = "layer"

    def n_features(self, tap):
        return 1

    def features(self, tap, out, params, counter):
        return counter.counts(out, tap.channel_dim, params).sum(1)  # N x 1


class ChannelMNC(MeanThreshold):
    """One count per output channel (over its positions) of the neurons ``> m_l``, the
    layer's threshold, so a tap's channel counts add up to its ``layer`` count."""

    name = "channel"

    def n_features(self, tap):
        return tap.channels

    def feature_names(self, tap):
        return [f"{tap.name}:c{c}" for c in range(tap.channels)]

    def features(self, tap, out, params, counter):
        return counter.counts(out, tap.channel_dim, params)[:, :, 0]  # N x C


class KMultisection(Criterion):
    """Counts above the thresholds ``m_l + z s_l``, z in ``levels``, per tap; z = 0 is the
    paper's count. ``per_channel=True`` (registered as ``kmultisection-channel``) counts per
    channel, columns channel-major (channel 0's levels first)."""

    name = "kmultisection"
    levels: ClassVar[tuple[float, ...]] = (-1.0, 0.0, 1.0, 2.0)
    param_shape = (len(levels),)

    def __init__(self, per_channel: bool = False) -> None:
        self.per_channel = per_channel

    def batch_stats(self, tap, out):
        import torch

        from fakespotter.taps import output_sum

        # sum and sum of squares, float32 partials per channel like the mean's (float64
        # over the whole output is 25x slower on CPU)
        return torch.stack([output_sum(out, tap), output_sum(out * out, tap)])

    def fit_params(self, tap, stats, numel):
        mean = stats[0] / numel
        std = np.sqrt(max(stats[1] / numel - mean * mean, 0.0))
        return np.array([mean + z * std for z in self.levels], dtype=np.float64)

    def n_features(self, tap):
        return len(self.levels) * (tap.channels if self.per_channel else 1)

    def feature_names(self, tap):
        levels = [f"z{z:+g}" for z in self.levels]
        if not self.per_channel:
            return [f"{tap.name}:{z}" for z in levels]
        return [f"{tap.name}:c{c}:{z}" for c in range(tap.channels) for z in levels]

    def features(self, tap, out, params, counter):
        counts = counter.counts(out, tap.channel_dim, params)  # N x C x levels
        if not self.per_channel:
            counts = counts.sum(1)  # N x levels
        return counts.reshape(len(out), -1)  # channel-major: channel 0's levels first

    def layer_count(self, columns):
        # the neurons above m_l, the paper's count (the levels' sum would count a neuron 4x)
        at_mean = columns.reshape(len(columns), -1, len(self.levels))[:, :, self.levels.index(0.0)]
        return at_mean.sum(axis=1)


class KMultisectionChannel(KMultisection):
    """:class:`KMultisection` counted per output channel, under its own name so that a model
    file says which of the two it holds."""

    name = "kmultisection-channel"

    def __init__(self) -> None:
        super().__init__(per_channel=True)


# The registry: name -> criterion, in the order --variant lists them.
CRITERIA: dict[str, Criterion] = {}


def register_criterion(criterion):
    """Add a criterion under its ``name``: an instance, or a class with a no-argument
    constructor (so this works as a class decorator). Returns its argument."""
    obj = criterion() if isinstance(criterion, type) else criterion
    if not isinstance(obj, Criterion):
        raise TypeError(f"{criterion!r} is not a Criterion")
    name = obj.name
    if not isinstance(name, str) or not name or name == EMBEDDING:
        raise ValueError(f"a criterion needs a name other than {EMBEDDING!r}, not {name!r}")
    if name in CRITERIA:
        raise ValueError(f"criterion {name!r} is registered already")
    if not all(isinstance(d, int) and d > 0 for d in obj.param_shape):
        raise ValueError(
            f"criterion {name!r}: param_shape must hold positive ints, not {obj.param_shape!r}"
        )
    CRITERIA[name] = obj
    return criterion


def unregister_criterion(name: str) -> None:
    CRITERIA.pop(name, None)


def get_criterion(criterion: str | Criterion) -> Criterion:
    """A registered criterion by name; a Criterion instance passes through (registered or not)."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str) and criterion in CRITERIA:
        return CRITERIA[criterion]
    raise UserError(f"criterion must be one of {', '.join(CRITERIA)}, not {criterion!r}")


def variants() -> tuple[str, ...]:
    """What ``FakeSpotter(variant=...)`` and ``--variant`` accept, read now: every
    registered criterion, then ``embedding``."""
    return (*CRITERIA, EMBEDDING)


register_criterion(LayerMNC)
register_criterion(ChannelMNC)
register_criterion(KMultisection)
register_criterion(KMultisectionChannel)

"""Richer coverage features than the paper's, for the "beyond the paper" study in reproduce.py.

One fitting pass over the training crops collects, per tap, the mean and standard deviation
of all its neuron outputs (the paper's m_l, plus s_l) and the mean of every single neuron.
One extraction pass then gives, per image and per channel of every tap:

* ``multi``: counts of outputs above m_l + z * s_l for z in LEVELS, a count-form of
  DeepGauge's k-multisection coverage (several thresholds per layer instead of one);
  z = 0 is the ``channel`` variant. This is the package's ``kmultisection`` criterion
  (fakespotter.criteria.KMultisection) counted per channel: its statistics, thresholds and
  counts come from there; summed per layer they are ``FakeSpotter(variant="kmultisection")``;
* ``neuron``: counts of outputs above their own neuron's training mean (per-neuron
  thresholds instead of one per layer);
* ``topk``: counts of outputs among the image's top TOP_FRACTION of that layer (DeepGauge's
  top-k neuron coverage, counted per channel).

``neuron`` and ``topk`` stay study-only here: a package criterion keeps the same number of
fitted parameters for every tap (one model-file array), and per-neuron means are a tap-sized
array each; top-k fits nothing. All three share this module's one hooked pass.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from fakespotter.criteria import KMultisection
from fakespotter.taps import eval_mode, forward_hooks

MULTI = KMultisection(per_channel=True)
LEVELS = MULTI.levels
TOP_FRACTION = 0.05


def _fresh_buffer(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The criterion's scratch buffer; a new one each time is fine for this study."""
    return torch.empty_like(like, dtype=dtype)


def _modules(model, taps):
    modules = dict(model.named_modules())
    return [modules[t.name] for t in taps]


def _nchw(out: torch.Tensor, tap) -> torch.Tensor:
    """Batched output as N x C x positions."""
    if tap.kind == "conv":  # one copy to NCHW: the comparisons below then read in order
        return out.contiguous().reshape(len(out), tap.channels, -1)
    return out.reshape(len(out), -1, tap.channels).transpose(1, 2)


def _count(compare, x: torch.Tensor, t) -> torch.Tensor:
    """N x C counts of compare(x, t) over positions; the comparison goes into a float buffer
    (summing bools converts them to int64 first, a copy)."""
    return compare(x, t, out=torch.empty_like(x)).sum(2)


def fit(model, taps, batches) -> dict:
    """Per tap: the k-multisection thresholds (from the layer mean and std), and every
    neuron's mean, over all training images."""
    stats = [0.0] * len(taps)
    neuron_sums = [None] * len(taps)
    count = 0

    def hook_for(i, tap):
        def hook(module, inputs, out):
            stats[i] = stats[i] + MULTI.batch_stats(tap, out).numpy()
            x = _nchw(out, tap)
            s = x.sum(0, dtype=torch.float64)
            neuron_sums[i] = s if neuron_sums[i] is None else neuron_sums[i] + s

        return hook

    hooks = {
        m: hook_for(i, t) for i, (m, t) in enumerate(zip(_modules(model, taps), taps, strict=False))
    }
    with forward_hooks(hooks), eval_mode(model), torch.inference_mode():
        for x in batches:
            model(x)
            count += len(x)
    levels = np.stack(
        [MULTI.fit_params(t, s, count * t.neurons) for t, s in zip(taps, stats, strict=False)]
    )
    return {"levels": levels, "neuron_means": [(s / count).float() for s in neuron_sums]}


def extract(model, taps, stats: dict, batches, n_batches: int) -> dict[str, np.ndarray]:
    """``multi`` (N x C*len(LEVELS)), ``neuron`` (N x C) and ``topk`` (N x C) counts."""
    parts = {"multi": [], "neuron": [], "topk": []}
    current: dict[str, list] = {}

    def hook_for(i, tap):
        def hook(module, inputs, out):
            current["multi"].append(MULTI.features(tap, out, stats["levels"][i], _fresh_buffer))
            x = _nchw(out, tap)
            current["neuron"].append(_count(torch.gt, x, stats["neuron_means"][i]))
            flat = x.reshape(len(x), -1)
            k = max(1, round(TOP_FRACTION * flat.shape[1]))
            kth = flat.kthvalue(flat.shape[1] - k + 1, dim=1).values  # the k-th largest
            current["topk"].append(_count(torch.ge, x, kth[:, None, None]))

        return hook

    hooks = {
        m: hook_for(i, t) for i, (m, t) in enumerate(zip(_modules(model, taps), taps, strict=False))
    }
    with forward_hooks(hooks), eval_mode(model), torch.inference_mode():
        for x in tqdm(batches, total=n_batches, desc="richer coverage"):
            for key in parts:
                current[key] = []
            model(x)
            for key in parts:
                parts[key].append(torch.cat(current[key], 1).to(torch.int32).numpy())
    return {key: np.concatenate(v) for key, v in parts.items()}

"""The feature path the detector uses (counting inside forward hooks, memory-format aware,
stopping after the deepest tap) against a straightforward reference: keep every tapped
output, count in numpy float64. Every backbone, variant and neuron kind, on generated inputs;
equality is exact."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from fakespotter.backbones import BACKBONES, get_backbone
from fakespotter.coverage import NeuronCoverage, forward_hooks
from fakespotter.detector import FakeSpotter


# every registered backbone (collected at import: the built-ins)
@pytest.fixture(scope="module", params=list(BACKBONES))
def backbone(request):
    torch.manual_seed(0)
    return get_backbone(request.param).untrained()


def crops(bb, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, bb.input_size, bb.input_size, 3), dtype=np.uint8)


def tapped_outputs(bb, x: torch.Tensor, neuron: str) -> list[np.ndarray]:
    """Every tap's full output (float64), read where the tap's neurons are."""
    modules = dict(bb.model.named_modules())
    seen: dict[str, list[np.ndarray]] = defaultdict(list)

    def keep(name):
        def hook(module, inputs, out):
            seen[name].append(out.detach().double().numpy().copy())

        return hook

    sources = []
    for tap in bb.taps():
        source = bb.activations.get(tap.name, tap.name) if neuron == "activation" else tap.name
        name, _, call = source.partition("@")
        sources.append((name, int(call) if call else 0))
    hooks = {modules[name]: keep(name) for name in {n for n, _ in sources}}
    with forward_hooks(hooks), torch.inference_mode():
        bb.model.eval()(x)
    return [seen[name][call] for name, call in sources]


def reference_counts(bb, outputs, thresholds, variant: str) -> np.ndarray:
    columns = []
    for tap, out, t in zip(bb.taps(), outputs, thresholds, strict=False):
        above = out > t
        if variant == "layer":
            columns.append(above.reshape(len(out), -1).sum(1, keepdims=True))
        else:
            axis = 1 if tap.kind == "conv" else out.ndim - 1
            above = np.moveaxis(above, axis, -1)
            columns.append(above.reshape(len(out), -1, tap.channels).sum(1))
    return np.concatenate(columns, axis=1).astype(np.float64)


@pytest.mark.parametrize("neuron", ["raw", "activation"])
@pytest.mark.parametrize("variant", ["layer", "channel"])
def test_fast_path_equals_reference(backbone, variant, neuron) -> None:
    bb = backbone
    train = [bb.preprocess(crops(bb, 3, seed)) for seed in (1, 2)]
    coverage = NeuronCoverage(bb.model, bb.taps(), variant, neuron, bb.activations).fit(train)

    # Eq. 1: mean of every neuron output over all training images (float32 partial sums
    # per channel: equal to the float64 mean within 1e-6 of the outputs' mean magnitude)
    per_batch = [tapped_outputs(bb, x, neuron) for x in train]
    for i in range(len(bb.taps())):
        outputs = np.concatenate([b[i] for b in per_batch])
        assert abs(coverage.thresholds_[i] - outputs.mean()) <= 1e-6 * np.abs(outputs).mean()

    # Eq. 2 on new images; each threshold is one of its tap's own output values (the middle
    # one), so many neurons sit on either side and at least one exactly on it
    x = bb.preprocess(crops(bb, 4, seed=3))
    outputs = tapped_outputs(bb, x, neuron)
    coverage.thresholds_ = np.array(
        [np.partition(o.ravel(), o.size // 2)[o.size // 2] for o in outputs]
    )
    got = coverage.transform(x)
    want = reference_counts(bb, outputs, coverage.thresholds_, variant)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    # neurons exactly at a threshold are not counted (Eq. 2 is a strict >)
    assert not np.array_equal(
        want, reference_counts(bb, outputs, np.nextafter(coverage.thresholds_, -np.inf), variant)
    )


def test_pruned_extractor_equals_full_extractor_columns(backbone) -> None:
    """A detector on the first k taps stops its forward pass after tap k and gives exactly
    the classifier output that the full extractor's first columns give."""
    bb = backbone
    k = len(bb.taps()) // 3
    X = crops(bb, 12, seed=4)
    X[6:] = X[6:] // 4 + 96  # a class difference any network can count: lower contrast
    y = np.r_[np.zeros(6, int), np.ones(6, int)]
    det = FakeSpotter(backbone=bb, variant="channel", taps=k, Cs=(1.0,), cv=2).fit(X, y)
    assert det.taps_ == [t.name for t in bb.taps()[:k]]

    ran_after = []
    last = dict(bb.model.named_modules())[bb.taps()[-1].name]
    with forward_hooks({last: lambda m, i, o: ran_after.append(1)}):
        pruned = det.predict_proba(X)
    assert not ran_after, "the pruned extractor ran the last layer"

    full = NeuronCoverage(bb.model, bb.taps(), "channel").fit([bb.preprocess(X)])
    # a tap's mean needs only that tap (equal up to float32 partial sums over other batches)
    np.testing.assert_allclose(full.thresholds_[:k], det.thresholds_, rtol=1e-5)
    full.thresholds_[:k] = det.thresholds_
    columns = full.transform(bb.preprocess(X))[:, : len(det.coef_)]
    assert np.array_equal(det.predict_proba(features=columns), pruned)

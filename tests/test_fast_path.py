"""The feature path the detector uses (counting inside forward hooks, memory-format aware,
stopping after the deepest tap) against a straightforward reference: keep every tapped
output, count in numpy float64. Every backbone, variant, neuron kind and counting engine
(fakespotter.counting: the C kernel and torch), on generated inputs; equality is exact.

Every combination of variant, neuron kind and engine runs on one network (dlib's, the
fastest); every other network runs every pair of them (each variant with each neuron kind and
each engine, each neuron kind with each engine: 8 cases, not 16). The slow VGG-Face (seconds
a forward pass) runs each variant once and each neuron-engine pair once."""

from __future__ import annotations

from collections import defaultdict
from itertools import product

import numpy as np
import pytest
import torch

from fakespotter import counting
from fakespotter.backbones import BACKBONES, get_backbone
from fakespotter.coverage import NeuronCoverage
from fakespotter.criteria import CRITERIA
from fakespotter.detector import FakeSpotter
from fakespotter.taps import forward_hooks

VARIANTS = list(CRITERIA)  # every registered criterion (collected at import: the built-ins)
NEURONS = ("raw", "activation")
ENGINES = ("kernel", "torch")
EVERY_COMBINATION = "dlib"  # the fastest network: the whole product
SLOW_NETWORKS = {"vggface"}  # 138M weights at 224 px


def combinations(name: str) -> list[tuple[str, str, str]]:
    """(variant, neuron, engine) to run on the backbone ``name``."""
    if name == EVERY_COMBINATION:
        return list(product(VARIANTS, NEURONS, ENGINES))
    if name in SLOW_NETWORKS:
        pairs = list(product(NEURONS, ENGINES))
        rounds = max(len(VARIANTS), len(pairs))
        return [(VARIANTS[i % len(VARIANTS)], *pairs[i % len(pairs)]) for i in range(rounds)]
    # every pair: each (variant, neuron) once, the engine alternating with both
    return [
        (variant, neuron, ENGINES[(v + n) % 2])
        for v, variant in enumerate(VARIANTS)
        for n, neuron in enumerate(NEURONS)
    ]


def pytest_generate_tests(metafunc):
    """Every registered backbone (collected at import: the built-ins), built once per module."""
    if "variant" in metafunc.fixturenames:
        cases = [(name, *c) for name in BACKBONES for c in combinations(name)]
        metafunc.parametrize(
            ("backbone", "variant", "neuron", "engine"),
            cases,
            indirect=["backbone"],
            scope="module",
            ids=["-".join(c) for c in cases],
        )
    elif "backbone" in metafunc.fixturenames:
        metafunc.parametrize("backbone", list(BACKBONES), indirect=True, scope="module")


_BUILT: dict = {}  # name -> backbone: the cases of one backbone need not run in a row


@pytest.fixture(scope="module")
def backbone(request):
    if request.param not in _BUILT:
        torch.manual_seed(0)
        _BUILT[request.param] = get_backbone(request.param).untrained()
    return _BUILT[request.param]


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
    """Each tap's counts above each of its thresholds, per channel (channel-major: a
    channel's levels side by side) or summed over the layer, as the variant says."""
    per_channel = variant in ("channel", "kmultisection-channel")
    columns = []
    for tap, out, t in zip(bb.taps(), outputs, thresholds, strict=False):
        channel_axis = 1 if tap.kind == "conv" else out.ndim - 1
        positions = tuple(a for a in range(1, out.ndim) if a != channel_axis)
        counts = np.stack(
            [np.count_nonzero(out > level, axis=positions) for level in np.atleast_1d(t)], -1
        )  # N x C x L
        if not per_channel:
            counts = counts.sum(1)
        columns.append(counts.reshape(len(out), -1))
    return np.concatenate(columns, axis=1).astype(np.float64)


_OBSERVED: dict = {}  # name -> {neuron: observed}


@pytest.fixture(scope="module")
def observed(backbone):
    """neuron -> two training batches, a batch of new images, and every tap's outputs on
    each: made once per backbone and neuron kind (VGG-Face's take seconds)."""
    bb, made = backbone, _OBSERVED.setdefault(backbone.name, {})

    def get(neuron: str):
        if neuron not in made:
            # two images per batch for a network at 224 px (VGG-Face): batches of more than
            # one image are what the check needs, and each of its forward passes is slow
            n = 2 if bb.input_size >= 160 else 3
            train = [bb.preprocess(crops(bb, n, seed)) for seed in (1, 2)]
            x = bb.preprocess(crops(bb, n + 1, seed=3))
            made[neuron] = (
                train,
                [tapped_outputs(bb, b, neuron) for b in train],
                x,
                tapped_outputs(bb, x, neuron),
            )
        return made[neuron]

    return get


_MOMENTS: dict = {}


def _moments(bb, train_outputs, neuron: str) -> list[tuple[float, float, float]]:
    """Per tap: mean, standard deviation and mean magnitude of its training outputs (float64)."""
    key = (bb.name, neuron)
    if key not in _MOMENTS:
        found = []
        for i in range(len(bb.taps())):
            o = np.concatenate([b[i] for b in train_outputs])
            found.append((o.mean(), o.std(), np.abs(o).mean()))
        _MOMENTS[key] = found
    return _MOMENTS[key]


_EXPECTED: dict = {}  # the same for both engines: made once per backbone, neuron kind, variant


def _expected(bb, outputs, variant: str, neuron: str, levels):
    """Thresholds at the taps' own output values (at their median, or for the k-multisection
    levels at 20%, 50%, 50% and 90%: two levels equal), the reference counts above them, and
    the counts just below them."""
    key = (bb.name, neuron, variant)  # by name: an id can be reused once a backbone is freed
    if key not in _EXPECTED:
        fractions = (0.5,) if levels is None else (0.2, 0.5, 0.5, 0.9)
        values = own_values(outputs, fractions)
        thresholds = values[:, 0] if levels is None else values
        below = np.nextafter(thresholds, -np.inf)
        _EXPECTED[key] = (
            thresholds,
            reference_counts(bb, outputs, thresholds, variant),
            reference_counts(bb, outputs, below, variant),
        )
    return _EXPECTED[key]


def own_values(outputs, fractions) -> np.ndarray:
    """Per tap, its own output values at these fractions of the sorted outputs (so many
    neurons sit on either side of each threshold and at least one exactly on it)."""
    rows = []
    for o in outputs:
        flat = o.ravel()
        at = [int(f * (flat.size - 1)) for f in fractions]
        rows.append(np.partition(flat, at)[at])
    return np.array(rows)


@pytest.mark.slow
def test_fast_path_equals_reference(backbone, observed, variant, neuron, engine) -> None:
    if engine == "kernel" and counting.engine("kernel").startswith("torch"):
        pytest.skip(f"no counting kernel here: {counting.engine('kernel')}")
    bb = backbone
    train, train_outputs, x, outputs = observed(neuron)
    coverage = NeuronCoverage(bb.model, bb.taps(), variant, neuron, bb.activations, counting=engine)
    assert coverage.counter.engine == engine
    levels = getattr(coverage.criterion, "levels", None)
    if engine == "torch":  # fitting counts nothing: once per variant and neuron kind
        # Eq. 1 (and the k-multisection levels m + z s): the mean (and standard deviation)
        # of every neuron output over all training images, from float32 partial sums per
        # channel: the float64 values within 1e-5 of the outputs' mean magnitude
        coverage.fit(train)
        for i, (mean, std, magnitude) in enumerate(_moments(bb, train_outputs, neuron)):
            want = mean if levels is None else mean + np.array(levels) * std
            atol = 1e-5 * magnitude
            np.testing.assert_allclose(coverage.thresholds_[i], want, rtol=0, atol=atol)

    # Eq. 2 on new images, thresholds at the taps' own output values (two levels equal)
    thresholds, want, want_below = _expected(bb, outputs, variant, neuron, levels)
    coverage.thresholds_ = thresholds
    got = coverage.transform(x)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    # neurons exactly at a threshold are not counted (Eq. 2 is a strict >)
    assert not np.array_equal(want, want_below)


@pytest.mark.slow
def test_pruned_extractor_equals_full_extractor_columns(backbone) -> None:
    """A detector on the first k taps stops its forward pass after tap k and gives exactly
    the classifier output that the full extractor's first columns give."""
    bb = backbone
    k = len(bb.taps()) // 3
    half = 3 if bb.input_size >= 160 else 6  # VGG-Face at 224 px: fewer, slow, passes
    X = crops(bb, 2 * half, seed=4)
    X[half:] = X[half:] // 4 + 96  # a class difference any network can count: lower contrast
    y = np.r_[np.zeros(half, int), np.ones(half, int)]
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

"""Tests for fakespotter.coverage, on tiny networks with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from fakespotter.coverage import NeuronCoverage
from fakespotter.taps import Tap, find_taps


class HandNet(nn.Module):
    """conv(1->2, 1x1) -> ReLU -> flatten -> fc(8->2), with fixed weights.

    conv channel 0 = 2*x, channel 1 = 1 - x (per pixel).
    fc output 0 = sum of all 8 ReLU outputs; output 1 = 3 * (last ReLU output).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)  # in-place: raw taps must be read before it runs
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
            self.fc.weight.zero_()
            self.fc.weight[0] = 1.0
            self.fc.weight[1, 7] = 3.0
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


# Two 1x2x2 images, pixels in row-major order.
X1 = [1.0, 2.0, 3.0, 4.0]
X2 = [-0.25, 1.0, 0.25, -3.0]
HAND_X = torch.tensor([X1, X2]).view(2, 1, 2, 2)
# By hand:
#   x1 conv: c0 = [2, 4, 6, 8]       c1 = [0, -1, -2, -3]      (sum 20 - 6 = 14)
#   x2 conv: c0 = [-0.5, 2, 0.5, -6] c1 = [1.25, 0, 0.75, 4]   (sum -4 + 6 = 2)
#   raw conv threshold = (14 + 2) / 16 = 1.0
#   relu:    x1 sums 20 + 0, x2 sums 2.5 + 6 -> activation threshold 28.5 / 16 = 1.78125
#   fc out:  x1 = [20, 0], x2 = [8.5, 12] -> fc threshold 40.5 / 4 = 10.125
CONV_RAW, CONV_ACT, FC = 1.0, 1.78125, 10.125
#   raw conv > 1:        x1 c0: 4, c1: 0;  x2 c0: 1 (2), c1: 2 (1.25, 4)
#   relu > 1.78125:      x1 c0: 4, c1: 0;  x2 c0: 1 (2), c1: 1 (4)
#   fc > 10.125:         x1 [1, 0];        x2 [0, 1]


def hand_coverage(**kwargs) -> NeuronCoverage:
    model = HandNet()
    return NeuronCoverage(model, find_taps(model, (1, 2, 2)), **kwargs)


def test_find_taps_on_hand_net() -> None:
    taps = find_taps(HandNet(), (1, 2, 2))
    assert taps == [
        Tap("conv", "conv", (2, 2, 2), channels=2, neurons=8),
        Tap("fc", "linear", (2,), channels=2, neurons=2),
    ]


@pytest.mark.parametrize(
    "variant, neuron, thresholds, expected",
    [
        ("layer", "raw", [CONV_RAW, FC], [[4, 1], [3, 1]]),
        ("channel", "raw", [CONV_RAW, FC], [[4, 0, 1, 0], [1, 2, 0, 1]]),
        ("layer", "activation", [CONV_ACT, FC], [[4, 1], [2, 1]]),
        ("channel", "activation", [CONV_ACT, FC], [[4, 0, 1, 0], [1, 1, 0, 1]]),
    ],
)
def test_hand_computed_thresholds_and_counts(variant, neuron, thresholds, expected) -> None:
    # fc has no entry in `activations`, so it falls back to its raw output.
    cov = hand_coverage(criterion=variant, neuron=neuron, activations={"conv": "relu"})
    # Fit on the two images in separate batches: the mean is over all of them.
    cov.fit([HAND_X[:1], HAND_X[1:]])
    assert cov.thresholds_.dtype == np.float64
    np.testing.assert_array_equal(cov.thresholds_, thresholds)
    features, output = cov.transform(HAND_X, return_output=True)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(output.numpy(), [[20.0, 0.0], [8.5, 12.0]])


def test_feature_names_and_slices() -> None:
    layer = hand_coverage(criterion="layer")
    assert layer.feature_names == ["conv", "fc"]
    assert layer.feature_slices == {"conv": slice(0, 1), "fc": slice(1, 2)}
    channel = hand_coverage(criterion="channel")
    assert channel.feature_names == ["conv:c0", "conv:c1", "fc:c0", "fc:c1"]
    assert channel.feature_slices == {"conv": slice(0, 2), "fc": slice(2, 4)}
    assert channel.n_features == 4


def test_transform_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        hand_coverage().transform(HAND_X)


def test_given_thresholds_skip_fit_and_compare_exactly() -> None:
    # float32(0.1) is 0.10000000149... > 0.1; a naive float32 compare would say "equal".
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    cov = NeuronCoverage(model, find_taps(model, (1, 1, 1))[:1], thresholds=[0.1])
    x = torch.tensor([[0.1], [0.0999999]], dtype=torch.float32)
    np.testing.assert_array_equal(cov.transform(x), [[1], [0]])


# -- a small random conv net for property-style tests ----------------------


class Counter(nn.Module):
    """Identity that counts how often it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # Declared out of execution order on purpose; `unused` never runs.
        self.head = nn.Linear(8, 5)
        self.unused = nn.Linear(3, 3)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2)
        self.relu2 = nn.ReLU()
        self.after_conv2 = Counter()
        self.after_head = Counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.after_conv2(self.relu2(self.conv2(x)))
        return self.after_head(self.head(x.mean((2, 3))))


def small_net() -> SmallNet:
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():  # non-trivial BN statistics
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net


def random_images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 9, 9, generator=torch.Generator().manual_seed(seed))


def test_find_taps_execution_order_and_neurons() -> None:
    net = small_net()
    net.train()
    taps = find_taps(net, (3, 9, 9))
    assert [(t.name, t.kind, t.shape, t.channels, t.neurons) for t in taps] == [
        ("conv1", "conv", (4, 9, 9), 4, 4 * 9 * 9),
        ("conv2", "conv", (8, 4, 4), 8, 8 * 4 * 4),
        ("head", "linear", (5,), 5, 5),
    ]
    assert net.training and net.bn1.training  # train/eval flags restored
    assert all(not m._forward_hooks for m in net.modules())


def test_streaming_mean_equals_mean_over_all_outputs() -> None:
    net = small_net()
    activations = {"conv1": "relu1", "conv2": "relu2"}
    cov = NeuronCoverage(
        net, find_taps(net, (3, 9, 9)), neuron="activation", activations=activations
    )
    images = random_images(9)
    cov.fit([images[:3], images[3:4], images[4:9]])  # uneven batches

    # Independent reference: keep every output of the same batches, concatenate, average.
    kept: dict[str, list[torch.Tensor]] = {"relu1": [], "relu2": [], "head": []}
    handles = [
        getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: kept[name].append(o.clone())
        )
        for name in kept
    ]
    net.eval()
    with torch.no_grad():
        for batch in (images[:3], images[3:4], images[4:9]):
            net(batch)
    for h in handles:
        h.remove()
    # float32 partial sums per channel: within 1e-6 of the outputs' mean magnitude
    for threshold, name in zip(cov.thresholds_, kept, strict=False):
        outputs = torch.cat(kept[name]).double()
        assert abs(threshold - outputs.mean().item()) <= 1e-6 * outputs.abs().mean().item()

    # One batch gives the same thresholds, up to float32 differences of the forward pass itself.
    single = NeuronCoverage(net, cov.taps, neuron="activation", activations=activations).fit(
        [images]
    )
    np.testing.assert_allclose(single.thresholds_, cov.thresholds_, rtol=1e-5)


def test_layer_variant_is_sum_of_channel_variant() -> None:
    net = small_net()
    taps = find_taps(net, (3, 9, 9))
    images = random_images(6)
    layer = NeuronCoverage(net, taps, "layer").fit([images])
    channel = NeuronCoverage(net, taps, "channel", thresholds=layer.thresholds_)
    per_layer, per_channel = layer.transform(images), channel.transform(images)
    assert per_channel.shape == (6, 4 + 8 + 5)
    for tap in taps:
        np.testing.assert_array_equal(
            per_layer[:, layer.feature_slices[tap.name]][:, 0],
            per_channel[:, channel.feature_slices[tap.name]].sum(1),
        )
    # Counts are bounded by the neuron count and not all trivial.
    assert (per_layer <= [t.neurons for t in taps]).all() and per_layer.sum() > 0


def test_activation_uses_named_module_and_call_index() -> None:
    class SharedRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 1)
            self.conv2 = nn.Conv2d(2, 2, 1)
            self.relu = nn.ReLU()  # used twice, as in many ResNets

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv2(self.relu(self.conv1(x))))

    torch.manual_seed(0)
    net = SharedRelu()
    x = torch.randn(4, 1, 3, 3)
    cov = NeuronCoverage(
        net,
        find_taps(net, (1, 3, 3)),
        neuron="activation",
        activations={"conv1": "relu", "conv2": "relu@1"},
    ).fit([x])
    with torch.no_grad():
        first = torch.relu(net.conv1(x))
        second = torch.relu(net.conv2(first))
    np.testing.assert_allclose(
        cov.thresholds_, [first.double().mean(), second.double().mean()], rtol=1e-6
    )
    expected = [
        [(first[i] > cov.thresholds_[0]).sum(), (second[i] > cov.thresholds_[1]).sum()]
        for i in range(4)
    ]
    np.testing.assert_array_equal(cov.transform(x), expected)


def test_hooks_removed_after_fit_transform_and_errors() -> None:
    net = small_net()
    cov = NeuronCoverage(
        net, find_taps(net, (3, 9, 9)), neuron="activation", activations={"conv1": "relu1"}
    )
    cov.fit([random_images(2)])
    cov.transform(random_images(2))
    assert all(not m._forward_hooks for m in net.modules())

    def boom(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    net.train()
    net.after_conv2.forward = boom  # fails mid-forward, after some hooks ran
    with pytest.raises(RuntimeError, match="boom"):
        cov.transform(random_images(2))
    with pytest.raises(RuntimeError, match="boom"):
        cov.fit([random_images(2)])
    assert all(not m._forward_hooks for m in net.modules())
    assert net.training and net.bn1.training


def test_stop_after_last_tap_skips_later_modules() -> None:
    net = small_net()
    full = NeuronCoverage(net, find_taps(net, (3, 9, 9)), "channel").fit([random_images(8)])
    images = random_images(5, seed=2)
    expected = full.transform(images)

    pruned = full.subset(["conv2", "conv1"])  # kept in `full`'s tap order
    assert [t.name for t in pruned.taps] == ["conv1", "conv2"]
    np.testing.assert_array_equal(pruned.thresholds_, full.thresholds_[:2])
    net.after_conv2.calls = net.after_head.calls = 0
    features = pruned.transform(images)
    assert (net.after_conv2.calls, net.after_head.calls) == (0, 0)  # nothing after conv2 ran
    np.testing.assert_array_equal(features, expected[:, : 4 + 8])
    assert all(not m._forward_hooks for m in net.modules())

    # Fitting with early stop gives the same thresholds too.
    refit = NeuronCoverage(net, pruned.taps, stop_after_last_tap=True).fit([random_images(8)])
    np.testing.assert_allclose(refit.thresholds_, full.thresholds_[:2], rtol=1e-12)
    with pytest.raises(ValueError, match="full forward"):
        pruned.transform(images, return_output=True)


def test_bad_arguments() -> None:
    net = small_net()
    taps = find_taps(net, (3, 9, 9))
    with pytest.raises(ValueError):
        NeuronCoverage(net, taps, criterion="neuron")
    with pytest.raises(KeyError, match="nope"):
        NeuronCoverage(net, taps, neuron="activation", activations={"conv1": "nope"})
    with pytest.raises(ValueError, match="thresholds"):
        NeuronCoverage(net, taps, thresholds=[0.0])


# -- criteria beyond the paper's ---------------------------------------------


def test_kmultisection_thresholds_and_counts() -> None:
    from fakespotter.coverage import counts_per_layer
    from fakespotter.criteria import KMultisection

    net = small_net()
    taps = find_taps(net, (3, 9, 9))
    images = random_images(7)
    multi = NeuronCoverage(net, taps, "kmultisection").fit([images[:3], images[3:]])
    layer = NeuronCoverage(net, taps, "layer").fit([images[:3], images[3:]])
    assert multi.thresholds_.shape == (3, 4)
    np.testing.assert_array_equal(multi.thresholds_[:, 1], layer.thresholds_)  # z = 0: same m_l

    kept: dict[str, torch.Tensor] = {}
    handles = [
        getattr(net, t.name).register_forward_hook(
            lambda m, i, o, name=t.name: kept.__setitem__(name, o.double().clone())
        )
        for t in taps
    ]
    net.eval()
    with torch.no_grad():
        net(images)
    for h in handles:
        h.remove()
    for tap, t in zip(taps, multi.thresholds_, strict=False):
        out = kept[tap.name]
        want = [out.mean() + z * out.std(unbiased=False) for z in KMultisection.levels]
        np.testing.assert_allclose(t, want, rtol=1e-5, atol=1e-6)

    got = multi.transform(images)
    want = np.stack(
        [
            np.stack([(kept[tap.name] > t).flatten(1).sum(1).numpy() for t in ts], 1)
            for tap, ts in zip(taps, multi.thresholds_, strict=False)
        ],
        1,
    ).reshape(7, -1)
    np.testing.assert_array_equal(got, want)
    assert multi.feature_names[:4] == ["conv1:z-1", "conv1:z+0", "conv1:z+1", "conv1:z+2"]
    # its per-layer view is the paper's count, not the sum of the four levels
    np.testing.assert_array_equal(
        counts_per_layer(got, multi.feature_slices, "kmultisection"), layer.transform(images)
    )

    per_channel = NeuronCoverage(
        net, taps, KMultisection(per_channel=True), thresholds=multi.thresholds_
    )
    columns = per_channel.transform(images)
    assert columns.shape == (7, 4 * (4 + 8 + 5))
    for tap in taps:  # channel-major columns add up to the per-layer ones
        c = columns[:, per_channel.feature_slices[tap.name]].reshape(7, tap.channels, 4).sum(1)
        np.testing.assert_array_equal(c, got[:, multi.feature_slices[tap.name]])
    with pytest.raises(ValueError, match="shape"):
        NeuronCoverage(net, taps, "kmultisection", thresholds=layer.thresholds_)


def test_a_criterion_object_need_not_be_registered() -> None:
    from fakespotter.criteria import CRITERIA, LayerMNC

    class Renamed(LayerMNC):
        name = "not-registered"

    net = small_net()
    cov = NeuronCoverage(net, find_taps(net, (3, 9, 9)), Renamed()).fit([random_images(4)])
    assert "not-registered" not in CRITERIA and cov.variant == "not-registered"
    ref = NeuronCoverage(net, cov.taps, "layer", thresholds=cov.thresholds_)
    np.testing.assert_array_equal(cov.transform(random_images(3)), ref.transform(random_images(3)))


def test_a_criterion_with_the_wrong_width_is_a_clear_error() -> None:
    from fakespotter.criteria import LayerMNC

    class TooWide(LayerMNC):
        def features(self, tap, out, params, scratch):
            return super().features(tap, out, params, scratch).repeat(1, 2)

    net = small_net()
    cov = NeuronCoverage(net, find_taps(net, (3, 9, 9)), TooWide(), thresholds=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected"):
        cov.transform(random_images(2))

"""fakespotter.counting: the C kernel against the torch engine on every layout it walks
(and the ones it copies first), and what happens when there is no kernel: an install without
one (no C compiler then), a library that does not load, one that counts wrong. The backbones'
own outputs are checked against a numpy reference in test_fast_path.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fakespotter import counting
from fakespotter.coverage import NeuronCoverage
from fakespotter.criteria import CRITERIA
from fakespotter.errors import UserError
from fakespotter.taps import find_taps


@pytest.fixture
def fresh_kernel(monkeypatch):
    """No kernel settled yet in this process, nor an engine asked for; restored after."""
    monkeypatch.delenv(counting.ENGINE_ENV, raising=False)
    monkeypatch.setattr(counting, "_kernel", None)


def kernel_or_skip():
    lib, reason = counting._kernel_or_reason()
    if lib is None:
        pytest.skip(f"no counting kernel here: {reason}")
    return lib


def channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def outputs() -> dict[str, tuple[torch.Tensor, int]]:
    """Batched outputs with the channel axis each one counts along."""
    g = torch.Generator().manual_seed(1)
    conv = torch.randn(3, 300, 5, 4, generator=g)  # 300 channels: two kernel blocks of 256
    conv[0, 0, 0, 0] = float("nan")
    conv[1, 1, :2, 0] = float("inf")
    conv[2, 2, 0, :] = -float("inf")
    conv[0, 3] = 0.25  # a whole channel on a threshold
    return {
        "contiguous": (conv, 1),
        "channels-last": (channels_last(conv), 1),
        "strided": (conv[:, ::2], 1),  # neither layout: the kernel counts a dense copy
        "batch-sliced": (conv[1:], 1),
        "one image": (channels_last(conv[:1]), 1),
        "one position": (conv[:, :, :1, :1], 1),
        "linear": (conv[:, :, 0, 0], -1),
        "linear 3-d": (conv[:, :, :, 0].transpose(1, 2), -1),  # N x positions x features
        "transposed linear": (conv[:, :, 0, 0].t().contiguous().t(), -1),
    }


@pytest.mark.parametrize("layout", list(outputs()))
def test_kernel_counts_equal_torch_counts(layout) -> None:
    lib = kernel_or_skip()
    out, channel_dim = outputs()[layout]
    # float64 thresholds: one between two float32 values, one on the whole-channel value,
    # one repeated, and the infinities
    thresholds = np.array([-np.inf, -0.5, 0.25, 0.25, 0.1 + 1e-12, 1.5, np.inf])
    want = counting.torch_counts(out, channel_dim, thresholds, counting.Counter("torch"))
    got = counting.kernel_counts(lib, out, channel_dim, thresholds)
    assert got.shape == want.shape == (len(out), out.shape[channel_dim], len(thresholds))
    assert torch.equal(got.to(want.dtype), want)
    # the strict >: the whole channel sitting on 0.25 counts for neither 0.25 level
    if layout == "contiguous":
        assert got[0, 3, 2] == got[0, 3, 3] == 0 and got[0, 3, 1] == 20


def test_every_criterion_counts_the_same_with_either_engine() -> None:
    """A small conv net with a channels-last conv, a contiguous one and a linear layer."""
    kernel_or_skip()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    )
    model[0].to(memory_format=torch.channels_last)
    taps = find_taps(model, (3, 12, 12))
    x = torch.randn(6, 3, 12, 12)
    for variant in CRITERIA:  # every registered criterion
        features = {}
        for engine in ("kernel", "torch"):
            coverage = NeuronCoverage(model, taps, variant, counting=engine).fit([x[:3]])
            assert coverage.counter.uses == engine
            features[engine] = coverage.transform(x)
        assert np.array_equal(features["kernel"], features["torch"]), variant


def test_an_install_without_the_kernel_counts_with_torch(fresh_kernel, monkeypatch) -> None:
    def not_built():
        raise ImportError("No module named 'fakespotter._counting'")

    monkeypatch.setattr(counting, "_library", not_built)
    assert counting.engine() == f"torch: {counting.NOT_BUILT}"
    assert counting.Counter().uses == "torch"
    with pytest.warns(RuntimeWarning, match="not built when fakespotter was installed"):
        assert counting.Counter("kernel").uses == "torch"  # asked for by name: said


def test_the_kernel_is_the_installed_extension(fresh_kernel) -> None:
    import fakespotter

    kernel_or_skip()
    library = counting._library()
    assert library.parent == Path(fakespotter.__file__).parent
    assert library.name.startswith("_counting.")
    assert counting.engine() == f"kernel ({library})"
    assert counting.Counter().uses == "kernel"


def test_a_library_that_will_not_load_counts_with_torch(
    fresh_kernel, monkeypatch, tmp_path
) -> None:
    damaged = tmp_path / "_counting.so"
    damaged.write_bytes(b"not a shared library")
    monkeypatch.setattr(counting, "_library", lambda: damaged)
    reason = counting.engine()
    assert reason.startswith(f"torch: could not load {damaged}: ")
    assert counting.Counter().uses == "torch"


def test_a_library_that_counts_wrong_is_not_used(fresh_kernel, monkeypatch, tmp_path) -> None:
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        pytest.skip("no C compiler here to build a wrong library")
    source = Path(counting.__file__).with_name("counting.c")
    wrong = tmp_path / "counting.c"  # >= instead of >: off only for values on a threshold
    wrong.write_text(source.read_text().replace("row[ch] > tk", "row[ch] >= tk"))
    library = tmp_path / "wrong.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", str(wrong), "-o", str(library)], check=True
    )
    monkeypatch.setattr(counting, "_library", lambda: library)
    reason = counting.engine()
    assert reason.startswith("torch: ") and "disagrees with torch's counts" in reason
    assert counting.Counter().uses == "torch"


def test_the_engine_is_chosen_by_environment(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv(counting.ENGINE_ENV, "torch")
    assert counting.engine() == "torch ($FAKESPOTTER_COUNTING=torch)"
    assert counting.Counter().uses == "torch"
    assert counting._kernel is None, "torch was asked for, yet the kernel was loaded"
    monkeypatch.setenv(counting.ENGINE_ENV, "fast")
    with pytest.raises(UserError, match="counting engine must be one of auto, kernel, torch"):
        counting.Counter()

"""fakespotter.counting: the C kernel against the torch engine on every layout it walks
(and the ones it copies first), and what happens when there is no kernel: no compiler, a
compiler that fails, a damaged or wrong library in the cache. The backbones' own outputs
are checked against a numpy reference in test_fast_path.py."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from fakespotter import counting
from fakespotter.coverage import NeuronCoverage
from fakespotter.criteria import CRITERIA
from fakespotter.errors import UserError
from fakespotter.taps import find_taps


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """An empty cache folder and no kernel settled yet in this process; restored after."""
    monkeypatch.setenv("FAKESPOTTER_CACHE", str(tmp_path))
    monkeypatch.delenv(counting.ENGINE_ENV, raising=False)
    monkeypatch.setattr(counting, "_kernel", None)
    return tmp_path


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


def test_no_compiler_counts_with_torch(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setattr(counting, "_compiler", lambda: None)
    assert counting.engine() == "torch: no C compiler found (set $CC)"
    assert counting.Counter().uses == "torch"
    with pytest.warns(RuntimeWarning, match="no C compiler"):  # asked for by name: said
        assert counting.Counter("kernel").uses == "torch"
    assert not list(fresh_kernel.rglob("*.so"))


def test_a_failing_compiler_counts_with_torch(fresh_kernel, monkeypatch) -> None:
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` program to stand in for a broken compiler")
    monkeypatch.setenv("CC", false)
    reason = counting.engine()
    assert reason.startswith("torch: could not build counting.c: false failed")
    assert not [p for p in fresh_kernel.rglob("*") if p.is_file()], "a failed build left files"


def test_the_kernel_is_built_once_and_reused(fresh_kernel) -> None:
    kernel_or_skip()
    (library,) = (fresh_kernel / "kernels").glob("counting-*.so")
    assert counting.engine() == f"kernel ({library})"
    stamp = library.stat().st_mtime_ns
    counting._kernel = None  # a new process: finds the cached library
    assert counting.engine() == f"kernel ({library})"
    assert library.stat().st_mtime_ns == stamp
    assert [p.name for p in (fresh_kernel / "kernels").iterdir()] == [library.name]


def test_a_damaged_cached_library_is_built_again(fresh_kernel) -> None:
    """In new processes: this one would get back the library it has loaded already."""
    if counting._compiler() is None:
        pytest.skip("no C compiler here")
    assert in_child(fresh_kernel).startswith("kernel (")
    (library,) = (fresh_kernel / "kernels").glob("counting-*.so")
    whole = library.read_bytes()
    library.write_bytes(b"not a shared library")
    assert in_child(fresh_kernel) == f"kernel ({library})"
    assert library.read_bytes()[:4] == whole[:4] == b"\x7fELF"  # a shared library again


def test_a_library_that_will_not_load_counts_with_torch(fresh_kernel, monkeypatch) -> None:
    def no_load(library):
        raise OSError(f"{library}: cannot open shared object file")

    monkeypatch.setattr(counting, "_load", no_load)
    if counting._compiler() is None:
        pytest.skip("no C compiler here")
    reason = counting.engine()
    assert reason.startswith("torch: could not load ") and "cannot open shared object" in reason


def test_a_library_that_counts_wrong_is_not_used(fresh_kernel, monkeypatch, tmp_path) -> None:
    if counting._compiler() is None:
        pytest.skip("no C compiler here")
    wrong = tmp_path / "counting.c"  # >= instead of >: off only for values on a threshold
    wrong.write_text(counting.SOURCE.read_text().replace("row[ch] > tk", "row[ch] >= tk"))
    monkeypatch.setattr(counting, "SOURCE", wrong)
    reason = counting.engine()
    assert reason.startswith("torch: ") and "disagrees with torch's counts" in reason
    assert counting.Counter().uses == "torch"


def test_the_engine_is_chosen_by_environment(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv(counting.ENGINE_ENV, "torch")
    assert counting.engine() == "torch ($FAKESPOTTER_COUNTING=torch)"
    assert counting.Counter().uses == "torch"
    assert not (fresh_kernel / "kernels").exists(), "torch was asked for, yet a kernel was built"
    monkeypatch.setenv(counting.ENGINE_ENV, "fast")
    with pytest.raises(UserError, match="counting engine must be one of auto, kernel, torch"):
        counting.Counter()


def test_a_concurrent_build_leaves_one_whole_library(fresh_kernel) -> None:
    """Two processes building at once: each renames its own finished file into place."""
    if counting._compiler() is None:
        pytest.skip("no C compiler here")
    reasons = in_child(fresh_kernel, processes=2)
    assert all(r.startswith("kernel (") for r in reasons), reasons
    assert len(list((fresh_kernel / "kernels").iterdir())) == 1


def in_child(cache, processes: int = 1):
    """counting.engine() in new processes (spawned) with ``cache`` as their cache folder."""
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        reasons = list(pool.map(_engine_in_child, [str(cache)] * processes))
    return reasons[0] if processes == 1 else reasons


def _engine_in_child(cache: str) -> str:
    os.environ["FAKESPOTTER_CACHE"] = cache
    return counting.engine()

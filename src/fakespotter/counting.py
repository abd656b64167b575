"""Counts of a tapped layer's outputs above thresholds, per image and channel: the one
reduction every built-in coverage criterion makes (``fakespotter.criteria``).

Two engines give the same counts (tests/test_fast_path.py checks every backbone, variant and
neuron kind against a float64 numpy reference, exactly):

* ``kernel``: ``counting.c``, one read of the output for all of a tap's thresholds, in the
  calling thread. It is compiled when fakespotter is installed, as the extension
  ``fakespotter._counting`` (setup.py; optional: an install without a C compiler goes on
  without it), loaded through ctypes and checked against the ``torch`` engine on a small
  tensor before it is used.
* ``torch``: one comparison into a reused buffer and one sum per threshold. It runs where the
  kernel cannot: no C compiler (or a build that fails), an output that is not float32 on the
  CPU. (A strided output is not one of those: the kernel counts a dense copy of it.)

``$FAKESPOTTER_COUNTING`` picks one: ``auto`` (the default: the kernel where it builds),
``kernel`` (the same, for a user who wants to be told when it does not) or ``torch``.
:func:`engine` says which one runs and why.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ENGINE_ENV",
    "ENGINES",
    "Counter",
    "Scratch",
    "above",
    "engine",
    "kernel_counts",
    "largest_at_most",
    "positions_by_channel",
    "torch_counts",
]

ENGINE_ENV = "FAKESPOTTER_COUNTING"
ENGINES = ("auto", "kernel", "torch")
NOT_BUILT = (
    "the C kernel was not built when fakespotter was installed (no C compiler then?); "
    "reinstall with one to count faster"
)
EXACT_FLOAT32 = 2**24  # 0/1 sums are exact in float32 below this many neurons per image

Scratch = Callable[[torch.Tensor, torch.dtype], torch.Tensor]


# -- exact comparisons ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # the same few thresholds come back every batch
def largest_at_most(value: float, dtype: torch.dtype) -> float:
    """Largest number representable in ``dtype`` that is <= ``value``.

    For ``t`` that number, ``out > t`` in ``dtype`` is exactly ``out > value`` (no ``dtype``
    value lies between them), so a float64 threshold can be compared against float32/half
    activations without upcasting them.
    """
    if not dtype.is_floating_point:
        return float(np.floor(value))
    t = torch.tensor(value, dtype=torch.float64).to(dtype)
    if t.item() > value:
        t = torch.nextafter(t, torch.tensor(-float("inf"), dtype=dtype))
    return t.item()


def above(out: torch.Tensor, threshold: float, scratch: Scratch) -> torch.Tensor:
    """0/1 floats shaped like ``out``: ``out > threshold`` exactly (a float64 threshold
    against float32/half outputs, see largest_at_most), in a scratch buffer.

    Floats, not bools: summing floats is several times faster than summing bools (int64)
    on CPU, and 0/1 sums are exact in float32 below 2**24 neurons per image.
    """
    hits = scratch(out, torch.float32 if out[0].numel() < EXACT_FLOAT32 else torch.float64)
    return torch.gt(out, largest_at_most(float(threshold), out.dtype), out=hits)


def positions_by_channel(t: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, int]:
    """A view of a batched output as N x C x positions or N x positions x C (no copy for
    contiguous or channels-last tensors), and the positions axis.

    A channels-last conv output is N x H x W x C in memory: summing over positions of its
    N x HW x C view reads memory in order, where an N x C x HW view would be a strided walk.
    """
    n = len(t)
    if t.dim() == 4 and channel_dim == 1:
        if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
            return t.permute(0, 2, 3, 1).reshape(n, -1, t.shape[1]), 1
        return t.reshape(n, t.shape[1], -1), 2
    return t.movedim(channel_dim, -1).reshape(n, -1, t.shape[channel_dim]), 1


# -- the kernel -------------------------------------------------------------------------------


def _library() -> Path:
    """The kernel built at install (``fakespotter._counting``, see setup.py); ImportError
    where the install had no C compiler."""
    from fakespotter import _counting  # type: ignore[attr-defined]

    return Path(_counting.__file__)


def _load(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for fn in (lib.fs_count_pc, lib.fs_count_cp):
        fn.argtypes = [ptr, i64, i64, i64, ptr, i64, ptr]
        fn.restype = ctypes.c_int
    return lib


_lock = threading.Lock()
_kernel: tuple[ctypes.CDLL | None, str] | None = None


def _kernel_or_reason() -> tuple[ctypes.CDLL | None, str]:
    """The loaded kernel and where it came from, or None and why not; settled once per process."""
    global _kernel
    with _lock:
        if _kernel is None:
            _kernel = _make_kernel()
        return _kernel


def _make_kernel() -> tuple[ctypes.CDLL | None, str]:
    try:
        library = _library()
    except ImportError:
        return None, NOT_BUILT
    try:
        lib = _load(library)
    except (OSError, AttributeError) as error:
        return None, f"could not load {library}: {_one_line(error)}"
    if not _agrees(lib):  # a miscompiled library: never trust it silently
        return None, f"{library} disagrees with torch's counts; reinstall fakespotter"
    return lib, f"kernel ({library})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _agrees(lib: ctypes.CDLL) -> bool:
    """The kernel against the torch engine on both layouts, ties and NaN included."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 6, generator=g)
    x[0, 0, 0, :3] = 0.5
    x[1, 2, 3, 4] = float("nan")
    thresholds = np.array([-0.3, 0.5, 0.5, 1.2])
    scratch = Counter("torch")
    return all(
        torch.equal(kernel_counts(lib, t, 1, thresholds), torch_counts(t, 1, thresholds, scratch))
        for t in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, 0, 0])
    )


def engine(name: str | None = None) -> str:
    """What counts for ``name`` (default ``$FAKESPOTTER_COUNTING``, else ``auto``): ``kernel
    (<library>)``, or ``torch`` and why not the kernel."""
    name = _engine_name(name)
    if name == "torch":
        return f"torch (${ENGINE_ENV}=torch)"
    lib, reason = _kernel_or_reason()
    return reason if lib is not None else f"torch: {reason}"


def _engine_name(name: str | None) -> str:
    from fakespotter.errors import UserError

    name = name or os.environ.get(ENGINE_ENV) or "auto"
    if name not in ENGINES:
        raise UserError(f"counting engine must be one of {', '.join(ENGINES)}, not {name!r}")
    return name


def kernel_counts(
    lib: ctypes.CDLL, out: torch.Tensor, channel_dim: int, values: np.ndarray
) -> torch.Tensor:
    """N x C x L int32 counts by counting.c (``out`` float32 on the CPU)."""
    view, positions = positions_by_channel(out, channel_dim)
    view = view.contiguous()  # the kernel walks dense memory; a no-op but for strided outputs
    n, c = len(out), out.shape[channel_dim]
    t = torch.tensor([largest_at_most(float(v), torch.float32) for v in values])
    result = torch.empty((n, len(values), c), dtype=torch.int32)
    count = lib.fs_count_pc if positions == 1 else lib.fs_count_cp
    # ctypes releases the GIL for the call
    count(view.data_ptr(), n, view.shape[positions], c, t.data_ptr(), len(values),
          result.data_ptr())  # fmt: skip
    return result.transpose(1, 2)


def torch_counts(
    out: torch.Tensor, channel_dim: int, values: np.ndarray, scratch: Scratch
) -> torch.Tensor:
    """N x C x L counts by torch: a comparison into ``scratch`` and a sum, per threshold."""
    columns = []
    for t in values:  # each count is taken before the next comparison reuses the buffer
        hits, positions = positions_by_channel(above(out, t, scratch), channel_dim)
        columns.append(hits.sum(positions))
    return torch.stack(columns, dim=-1)


# -- the counter ------------------------------------------------------------------------------


class Counter:
    """What criteria count with: ``counts(out, channel_dim, thresholds)``, and, called as
    ``counter(like, dtype)``, a scratch buffer for a criterion that counts something else.

    ``engine`` is what was asked for (``auto``, ``kernel``, ``torch``), ``uses`` what counts
    (``kernel`` or ``torch``). One per extractor; buffers are per thread, so concurrent
    callers never share one.
    """

    def __init__(self, engine: str | None = None) -> None:
        name = _engine_name(engine)
        self.engine = name
        self._lib: ctypes.CDLL | None = None
        if name != "torch":
            self._lib, reason = _kernel_or_reason()
            if self._lib is None and name == "kernel":
                import warnings

                warnings.warn(f"counting with torch: {reason}", RuntimeWarning, stacklevel=2)
        self.uses = "kernel" if self._lib is not None else "torch"
        self._local = threading.local()

    def counts(
        self, out: torch.Tensor, channel_dim: int, thresholds: Sequence[float] | np.ndarray
    ) -> torch.Tensor:
        """N x C x L counts of ``out > thresholds[k]`` per image and channel (positions summed),
        for a batched output with channels on ``channel_dim``. Float32, exact (float64 when an
        image has 2**24 neurons or more)."""
        values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        if self._lib is not None and out.dtype == torch.float32 and out.device.type == "cpu":
            dtype = torch.float32 if out[0].numel() < EXACT_FLOAT32 else torch.float64
            return kernel_counts(self._lib, out, channel_dim, values).to(dtype)
        return torch_counts(out, channel_dim, values, self)

    def __call__(self, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A buffer shaped and strided like ``like``, reused across taps and batches.

        Reuse matters: a fresh buffer the size of a big conv output is fresh pages from the
        OS each time, measured 3x the cost of the comparison itself. Same strides as ``like``
        matter too: comparing a channels-last output into an NCHW buffer is a strided walk,
        measured 10x slower.
        """
        dense = like.is_contiguous() or (
            like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last)
        )
        if not dense:
            return torch.empty_like(like, dtype=dtype)
        buffer = getattr(self._local, "buffer", None)
        if (
            buffer is None
            or buffer.numel() < like.numel()
            or buffer.dtype != dtype
            or buffer.device != like.device
        ):
            buffer = torch.empty(like.numel(), dtype=dtype, device=like.device)
            self._local.buffer = buffer
        return torch.as_strided(buffer, like.shape, like.stride())

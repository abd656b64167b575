"""The layers a coverage criterion watches: :class:`Tap` (a small description of each tapped
layer), :func:`find_taps` (every Conv2d and Linear that runs, in execution order), forward hooks
that remove themselves, and the tensor helpers criteria sum with. Imports nothing of ours but
``counting``, so that ``coverage`` (which runs the criteria) and ``criteria`` both depend on it
and not on each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fakespotter.counting import positions_by_channel

ForwardHook = Callable[[nn.Module, Any, Any], Any]


@dataclass(frozen=True)
class Tap:
    """A layer whose neurons are counted.

    ``shape`` is the per-image output shape seen by :func:`find_taps`
    (``(C, H, W)`` for a conv, ``(F,)`` for a linear layer).
    """

    name: str
    kind: str  # "conv" or "linear"
    shape: tuple[int, ...]
    channels: int
    neurons: int

    @property
    def channel_dim(self) -> int:
        """Channel axis of the batched output: conv is NCHW, linear is N...F."""
        return 1 if self.kind == "conv" else -1


@contextlib.contextmanager
def forward_hooks(hooks: Mapping[nn.Module, ForwardHook]) -> Iterator[None]:
    """Register one forward hook per module; remove them all on exit, even on errors."""
    handles = []
    try:
        for module, hook in hooks.items():
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore every submodule's flag afterwards.

    Coverage must not depend on batch composition (train-mode BatchNorm would).
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def find_taps(model: nn.Module, input_shape: tuple[int, int, int]) -> list[Tap]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` that runs, in execution order.

    Runs one forward pass on a zero batch of one image of ``input_shape``
    (C, H, W).  A module called several times is listed once, with the shape of
    its first call (the call :class:`NeuronCoverage` counts).
    """
    names = {module: name for name, module in model.named_modules()}
    seen: dict[str, Tap] = {}  # dicts keep insertion = execution order

    def make_hook(name: str, kind: str) -> ForwardHook:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if name not in seen:
                shape = tuple(output.shape[1:])
                channels = shape[0] if kind == "conv" else shape[-1]
                seen[name] = Tap(name, kind, shape, channels, int(np.prod(shape)))

        return hook

    hooks: dict[nn.Module, ForwardHook] = {}
    for module, name in names.items():
        if isinstance(module, nn.Conv2d):
            hooks[module] = make_hook(name, "conv")
        elif isinstance(module, nn.Linear):
            hooks[module] = make_hook(name, "linear")

    device, dtype = device_and_dtype(model)
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    with forward_hooks(hooks), eval_mode(model), torch.inference_mode():
        model(x)
    return list(seen.values())


# -- tensor helpers for criteria (fakespotter.criteria) ---------------------------------


def layer_sum(t: torch.Tensor) -> torch.Tensor:
    """N sums over everything but the batch axis (no reshape: a strided buffer stays put)."""
    return t.sum(tuple(range(1, t.dim())))


def output_sum(out: torch.Tensor, tap: Tap) -> torch.Tensor:
    """Sum of all of a batch's outputs as a float64 scalar tensor, no host sync.

    Per-channel sums in the output's dtype (cascade summation: ~1e-7 relative), the rest in
    float64. One float64 reduction over the whole output measured 25x slower on CPU, which
    made fitting slower than an extraction pass.
    """
    positions, axis = positions_by_channel(out, tap.channel_dim)
    return positions.sum((0, axis)).to(torch.float64).sum()

"""Parsed networks, cached: a network read from its original files once is kept as safetensors
beside them, so the next start loads tensors instead of parsing ONNX, Keras h5, dlib or
Torch7 again (part of `detect`'s start-up on one photo).

The copy is keyed by the sha256 of the verified originals and of the reader's source file: a
new weight file or a changed reader parses again. It is written only when the network rebuilt
from it (``spec.build()`` plus ``load_state_dict``) gives exactly the parsed network's output on
a fixed input; where it would not, a marker says so and the originals are always parsed. A
copy that cannot be read for any reason is ignored (and replaced). safetensors holds tensors
only: nothing in a cached file can run.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakespotter.weights import cache_dir

NOT_CACHEABLE = b"the network rebuilt from its state dict differs from the parsed one\n"


def cache_path(spec: Any) -> Path | None:
    """Where ``spec``'s parsed network is kept; None when its files are not all verified."""
    weights = spec.weights_sha256
    if not weights or "" in weights.split("+"):
        return None
    digest = hashlib.sha256(weights.encode())
    try:
        digest.update(Path(inspect.getfile(spec.from_files)).read_bytes())
    except (TypeError, OSError):
        return None  # a reader without a source file: nothing to key a change of it by
    return cache_dir() / spec.name / "parsed" / f"{digest.hexdigest()[:32]}.safetensors"


def load(spec: Any, parse: Callable[[], nn.Module]) -> nn.Module:
    """``spec``'s trained network: from the cached copy when there is a good one, else
    ``parse()`` (which reads the original files), keeping a copy for next time."""
    from safetensors.torch import load_file

    path = cache_path(spec)
    if path is not None and path.is_file() and path.stat().st_size > len(NOT_CACHEABLE):
        try:
            model = spec.build()
            model.load_state_dict(load_file(str(path)), strict=True)
            return model.eval()
        except Exception:  # noqa: BLE001 - any damage: parse the originals instead
            pass
    model = parse().eval()
    if path is not None and not path.is_file():
        _keep(spec, model, path)
    return model


def _keep(spec: Any, model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rebuilt = spec.build().eval()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        rebuilt.load_state_dict(state, strict=True)
        if not _same_output(model, rebuilt, int(spec.input_size)):
            partial.write_bytes(NOT_CACHEABLE)
        else:
            save_file(state, str(partial))
        os.replace(partial, path)  # whole or not at all, for any process reading it
    except Exception:  # noqa: BLE001 - a read-only cache or a shared tensor: no copy, no harm
        partial.unlink(missing_ok=True)


def _same_output(a: nn.Module, b: nn.Module, size: int) -> bool:
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        out_a, out_b = a(x), b(x)
    if isinstance(out_a, torch.Tensor):
        out_a, out_b = (out_a,), (out_b,)
    return all(torch.equal(p, q) for p, q in zip(out_a, out_b, strict=True))

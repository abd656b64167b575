"""fakespotter.backbones.parsed: a network parsed from its original files once loads from a
safetensors copy next time, identical; a damaged copy, a changed weight file or a network that
its state dict cannot rebuild exactly all fall back to parsing the originals."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from fakespotter import weights
from fakespotter.backbones import parsed


class Net(nn.Module):
    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, eps=eps)

    def forward(self, x):
        return self.bn(self.conv(x))


def read_original() -> nn.Module:
    """Stands for a reader of some file format: the same trained network every time."""
    torch.manual_seed(7)
    net = Net()
    net.bn.running_mean.uniform_(-1, 1)  # buffers travel too
    net.bn.running_var.uniform_(0.5, 2)
    return net


@dataclass
class Spec:
    name: str = "toy"
    input_size: int = 8
    weights_sha256: str = "ab" * 32
    build: object = Net
    parses: list = field(default_factory=list)

    def from_files(self):
        self.parses.append(1)
        return read_original()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    return tmp_path


def _out(model):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return model(x)


def test_second_load_reads_the_copy_and_is_identical():
    spec = Spec()
    first = parsed.load(spec, spec.from_files)
    second = parsed.load(spec, spec.from_files)
    assert spec.parses == [1]  # parsed once
    assert parsed.cache_path(spec).is_file()
    assert torch.equal(_out(first), _out(second))
    assert torch.equal(second.bn.running_var, first.bn.running_var)
    assert not second.training


def test_a_damaged_copy_is_parsed_again_and_replaced(cache):
    spec = Spec()
    parsed.load(spec, spec.from_files)
    path = parsed.cache_path(spec)
    path.write_bytes(path.read_bytes()[:100] + b"\0" * 200)
    model = parsed.load(spec, spec.from_files)
    assert spec.parses == [1, 1]
    assert torch.equal(_out(model), _out(read_original().eval()))


def test_another_weight_file_or_reader_has_another_copy():
    a, b = Spec(), Spec(weights_sha256="cd" * 32)
    assert parsed.cache_path(a) != parsed.cache_path(b)
    assert parsed.cache_path(Spec(weights_sha256="")) is None  # not verified: never cached
    assert parsed.cache_path(Spec(weights_sha256="ab" * 32 + "+")) is None


def test_a_network_its_state_dict_cannot_rebuild_is_always_parsed():
    spec = Spec(build=lambda: Net(eps=0.5))  # same tensors, other arithmetic
    for _ in range(3):
        model = parsed.load(spec, spec.from_files)
        assert torch.equal(_out(model), _out(read_original().eval()))
    assert spec.parses == [1, 1, 1]
    assert parsed.cache_path(spec).read_bytes() == parsed.NOT_CACHEABLE


def test_a_cache_that_cannot_be_written_still_loads(monkeypatch):
    import safetensors.torch

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    spec = Spec()
    model = parsed.load(spec, spec.from_files)
    assert torch.equal(_out(model), _out(read_original().eval()))
    assert not parsed.cache_path(spec).exists()
    assert not list(parsed.cache_path(spec).parent.glob("*.partial"))

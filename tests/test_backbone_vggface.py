"""VGG-Face from files in the layout of ``vgg_face_dag.pth`` (Albanie's pytorch-mcn conversion):
a ``torch.save``d OrderedDict of the 32 tensors ``conv1_1.weight`` .. ``fc8.bias`` of
``vgg_face_dag.py``, in the legacy (2017) and the zip serialization. The network must compute
what a straightforward float64 reference computes from the same arrays.

The full-size file is ~580 MB (fc6 alone is 4096 x 25088), so the fast tests use the same
names and container with smaller layers, and one slow test writes the real sizes.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from fakespotter import weights
from fakespotter.backbones import get_backbone, vggface

SMALL = vggface.Layout(channels=(4, 8, 8, 16, 16), fc=24, classes=10, input_size=64)

# vgg_face_dag.py's layer names, in its order
DAG_NAMES = [
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7", "fc8",
]  # fmt: skip


def random_state(layout: vggface.Layout, seed: int = 0) -> OrderedDict:
    """A state dict with vgg_face_dag's keys, shaped for ``layout``: He-scaled random weights."""
    rng = np.random.default_rng(seed)
    state = OrderedDict()
    for key, shape in vggface.state_shapes(layout).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if key.endswith("weight") else 0.1
        state[key] = torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))
    return state


def save(state, path, legacy: bool) -> None:
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


def reference(state, x: torch.Tensor) -> torch.Tensor:
    """vgg_face_dag.py's forward, written out in float64 from the state dict."""
    x = x.double()
    for block, n_convs in enumerate((2, 2, 3, 3, 3), 1):
        for i in range(1, n_convs + 1):
            w, b = (
                state[f"conv{block}_{i}.weight"].double(),
                state[f"conv{block}_{i}.bias"].double(),
            )
            x = F.conv2d(x, w, b, padding=1).clamp(min=0)
        x = F.max_pool2d(x, 2, 2)
    x = x.reshape(len(x), -1)  # x.view(x.size(0), -1): channel, row, column
    for name in ("fc6", "fc7"):
        x = (x @ state[f"{name}.weight"].double().T + state[f"{name}.bias"].double()).clamp(min=0)
    return x @ state["fc8.weight"].double().T + state["fc8.bias"].double()


def test_the_key_names_and_shapes_are_vgg_face_dags():
    shapes = vggface.state_shapes()
    assert list(shapes) == [f"{n}.{p}" for n in DAG_NAMES for p in ("weight", "bias")]
    assert shapes["conv1_1.weight"] == (64, 3, 3, 3) and shapes["conv5_3.weight"] == (
        512,
        512,
        3,
        3,
    )
    assert shapes["fc6.weight"] == (4096, 25088) and shapes["fc8.weight"] == (2622, 4096)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 145_002_878
    # the module's own parameters are exactly the file's keys
    assert {k: tuple(v.shape) for k, v in vggface.VGGFace(SMALL).state_dict().items()} == dict(
        vggface.state_shapes(SMALL)
    )


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-2017-format", "zip-format"])
def test_file_computes_the_reference(tmp_path, legacy):
    state = random_state(SMALL)
    path = tmp_path / "vgg_face_dag.pth"
    save(state, path, legacy)
    model = vggface.load_model(path, SMALL)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 50
    with torch.inference_mode():
        got = model(x)
    torch.testing.assert_close(got.double(), reference(state, x), rtol=1e-4, atol=1e-4)


def test_taps_and_activations():
    model = vggface.VGGFace(SMALL)
    taps = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert taps == DAG_NAMES  # 13 conv + 3 fc, in execution order
    modules = dict(model.named_modules())
    assert set(vggface.ACTIVATIONS) == set(DAG_NAMES) - {"fc8"}  # fc8's scores have no ReLU
    assert all(isinstance(modules[a], nn.ReLU) for a in vggface.ACTIVATIONS.values())


def test_preprocess_subtracts_the_rgb_mean():
    images = np.zeros((1, 224, 224, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 200, 100, 0
    tensor = vggface.preprocess(images)
    assert tensor.shape == (1, 3, 224, 224)
    # vgg_face_dag.py meta: mean [129.186279296875, 104.76238250732422, 93.59396362304688], RGB
    assert tensor[0, :, 9, 9].tolist() == pytest.approx(
        [200 - 129.186279296875, 100 - 104.76238250732422, -93.59396362304688]
    )


def test_a_file_of_other_shapes_is_refused_naming_the_layer(tmp_path):
    path = tmp_path / "vgg_face_dag.pth"
    save(random_state(SMALL), path, legacy=True)
    with pytest.raises(ValueError, match=r"conv1_1.weight has shape \(4, 3, 3, 3\), VGG-Face's is"):
        vggface.load_model(path)


def test_missing_or_extra_keys_are_refused(tmp_path):
    state = random_state(SMALL)
    del state["fc8.bias"]
    save(state, tmp_path / "a.pth", legacy=False)
    with pytest.raises(ValueError, match="lacks 'fc8.bias'"):
        vggface.read_state(tmp_path / "a.pth", SMALL)
    state = random_state(SMALL)
    state["module.conv1_1.weight"] = state["conv1_1.weight"]
    save(state, tmp_path / "b.pth", legacy=False)
    with pytest.raises(ValueError, match="unexpected key 'module.conv1_1.weight'"):
        vggface.read_state(tmp_path / "b.pth", SMALL)


class _RunsCode:
    def __reduce__(self):
        return (os.getpid, ())  # harmless, but code: a full unpickler would call it


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path):
    path = tmp_path / "vgg_face_dag.pth"
    buffer = io.BytesIO()
    torch.save({"conv1_1.weight": _RunsCode()}, buffer, pickle_module=pickle)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="not a PyTorch weights file"):
        vggface.load_model(path)
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02" + os.urandom(64))
    with pytest.raises(ValueError, match="not a PyTorch weights file"):
        vggface.load_model(tmp_path / "garbage.pth")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_weights_import_recognises_the_file_by_structure_and_refuses_others(
    tmp_path, cache, monkeypatch
):
    """`fakespotter weights import` with the real entry: no published sha256, so the
    structure check decides (here: the real layout with the small test sizes patched in)."""
    from fakespotter.cli import main

    monkeypatch.setattr(vggface, "VGG_FACE", SMALL)
    path = tmp_path / "downloaded.pth"
    save(random_state(SMALL), path, legacy=True)
    runner = CliRunner()
    result = runner.invoke(main, ["weights", "import", str(path)])
    assert result.exit_code == 0, result.output
    spec = get_backbone("vggface")
    assert result.output.strip() == f"vggface: {weights.cached_file(spec.weights)}"
    assert weights.is_cached(spec.weights)
    assert spec.weights_sha256 == weights.sha256_of(path)  # model files record this copy
    listing = runner.invoke(main, ["weights", "list"]).output
    assert "vggface  vgg_face_dag.pth  [cached]  ~580 MB" in listing
    assert "https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth" in listing

    (tmp_path / "notes.txt").write_text("not weights")
    result = runner.invoke(main, ["weights", "import", str(tmp_path / "notes.txt")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "is none of the known weight files" in result.output


def test_fetch_offline_names_the_url_and_the_import_command(cache, monkeypatch):
    from fakespotter.cli import main

    def offline(*args, **kwargs):
        raise weights.WeightsError("cannot download (Name or service not known); are you offline?")

    monkeypatch.setattr(weights, "_copy_from_url", offline)  # never reach the real site
    result = CliRunner().invoke(main, ["weights", "fetch", "vggface"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert (
        "https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth" in result.output
    )
    assert "fakespotter weights import FILE" in result.output


@pytest.mark.slow
def test_full_size_file_loads_and_computes_the_reference(tmp_path):
    """The real sizes (~580 MB on disk, ~1.2 GB of memory while it runs)."""
    state = random_state(vggface.VGG_FACE)
    path = tmp_path / "vgg_face_dag.pth"
    save(state, path, legacy=True)
    model = vggface.load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2)) * 50
    with torch.inference_mode():
        got = model(x)
    assert got.shape == (1, 2622)
    torch.testing.assert_close(got.double(), reference(state, x), rtol=1e-3, atol=1e-3)

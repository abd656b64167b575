"""Photo perturbations for robustness tests (JPEG, blur, noise, down-and-up resizing).

Each one is applied to the whole photo *before* face detection and alignment, as a
re-shared or re-compressed photo would reach the detector.  Specs are written
``kind:value`` and joined by commas: ``"jpeg:75,blur:1,noise:5,resize:0.5"``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from fakespotter.errors import UserError

__all__ = [
    "AUGMENTATIONS",
    "KINDS",
    "Perturbation",
    "PipelineAugmentation",
    "RandomAugmentation",
    "image_rng",
    "parse_perturbations",
    "perturbed_scores",
    "random_perturbation",
]

# kind -> what its value means (shown in error messages)
KINDS = {
    "jpeg": "JPEG quality 1-100",
    "blur": "Gaussian blur sigma in pixels, > 0",
    "noise": "Gaussian noise sigma in 0-255 units, > 0",
    "resize": "downscale factor, 0 < F < 1, then back up to the original size",
}


@dataclass(frozen=True)
class Perturbation:
    """One named perturbation: ``p(image, rng) -> image`` on H x W x 3 uint8 arrays."""

    kind: str
    value: float

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.value:g}"

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        if self.kind == "noise":
            rng = rng if rng is not None else np.random.default_rng(0)
            noisy = image.astype(np.float32) + rng.normal(0.0, self.value, image.shape)
            return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        pil = Image.fromarray(image, "RGB")
        if self.kind == "jpeg":
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=int(self.value))
            buf.seek(0)
            with Image.open(buf) as decoded:
                return np.asarray(decoded.convert("RGB"))
        if self.kind == "blur":
            return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=self.value)))
        if self.kind == "resize":
            w, h = pil.size
            small = (max(1, round(w * self.value)), max(1, round(h * self.value)))
            resample = Image.Resampling.BICUBIC
            return np.asarray(pil.resize(small, resample).resize((w, h), resample))
        raise ValueError(f"unknown perturbation kind {self.kind!r}")


def image_rng(seed: int, index: int) -> np.random.Generator:
    """Random stream for image ``index``: same noise for the same image whatever the order."""
    return np.random.default_rng([seed, index])


def random_perturbation(seed: int, index: int) -> tuple[Perturbation | None, np.random.Generator]:
    """The training-time augmentation of image ``index``: one of none / JPEG quality 30-95 /
    blur sigma 0.3-2 / noise sigma 1-8 / down-and-up resize 0.4-0.9, drawn uniformly, with
    the random stream that then drives it (same draw for the same image whatever the order)."""
    rng = image_rng(seed, index)
    kind = str(rng.choice(["none", "jpeg", "blur", "noise", "resize"]))
    if kind == "none":
        return None, rng
    value = {
        "jpeg": lambda: float(rng.integers(30, 96)),
        "blur": lambda: float(rng.uniform(0.3, 2.0)),
        "noise": lambda: float(rng.uniform(1.0, 8.0)),
        "resize": lambda: float(rng.uniform(0.4, 0.9)),
    }[kind]()
    return Perturbation(kind, value), rng


@dataclass(frozen=True)
class RandomAugmentation:
    """``random_perturbation(seed, index)`` as a picklable ``image -> image`` callable."""

    seed: int
    index: int

    def __call__(self, image: np.ndarray) -> np.ndarray:
        p, rng = random_perturbation(self.seed, self.index)
        return image if p is None else p(image, rng)


@dataclass(frozen=True)
class PipelineAugmentation:
    """A random photo-pipeline history for image ``index``, as real photos pick one up on the
    way from a camera to an upload: a tighter crop (the face shifted and rescaled), white
    balance and tone (per-channel gain, brightness, contrast, saturation, gamma), a new
    resolution through a random resampling filter, mild sharpening or blur, sensor-like noise,
    then a chain of one to three JPEG saves at random qualities and chroma subsampling. Each
    step is taken with its own probability, so most copies carry several steps. Picklable, and
    the same copy for the same (seed, index) whatever the order."""

    seed: int
    index: int

    def __call__(self, image: np.ndarray) -> np.ndarray:
        rng = image_rng(self.seed, self.index)
        pil = Image.fromarray(np.asarray(image), "RGB")
        w, h = pil.size
        if rng.random() < 0.5:  # crop jitter: up to 8% off each side
            left, top, right, bottom = (rng.uniform(0, 0.08, 4) * [w, h, w, h]).round()
            if right + left < w - 8 and bottom + top < h - 8:
                pil = pil.crop((int(left), int(top), int(w - right), int(h - bottom)))
        if rng.random() < 0.7:
            pil = _tone(pil, rng)
        if rng.random() < 0.6:  # another resolution, another resampling filter
            factor, before = rng.uniform(0.35, 1.0), pil.size
            filters = list(_RESAMPLING.values())
            size = (max(16, round(pil.width * factor)), max(16, round(pil.height * factor)))
            pil = pil.resize(size, filters[rng.integers(len(filters))])
            if rng.random() < 0.5:  # and back up, as an upscaling viewer or re-upload would
                pil = pil.resize(before, filters[rng.integers(len(filters))])
        step = rng.random()
        if step < 0.3:
            pil = pil.filter(
                ImageFilter.UnsharpMask(
                    radius=float(rng.uniform(0.5, 2.0)),
                    percent=int(rng.integers(20, 121)),
                    threshold=int(rng.integers(0, 4)),
                )
            )
        elif step < 0.45:
            pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
        out = np.asarray(pil)
        if rng.random() < 0.25:
            noisy = out.astype(np.float32) + rng.normal(0.0, rng.uniform(1.0, 6.0), out.shape)
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if rng.random() < 0.8:
            for _ in range(int(rng.integers(1, 4))):
                out = _jpeg(out, int(rng.integers(35, 96)), int(rng.integers(3)))
        return out


_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _tone(pil: Image.Image, rng: np.random.Generator) -> Image.Image:
    """White balance (per-channel gain), brightness, contrast, saturation and gamma."""
    x = np.asarray(pil).astype(np.float32) / 255.0
    gains = rng.uniform(0.9, 1.1, 3)
    x = x * (gains / gains.mean()) * rng.uniform(0.85, 1.15)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.85, 1.15) + mean
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * rng.uniform(0.8, 1.2)
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.85, 1.2)
    return Image.fromarray(np.rint(x * 255.0).astype(np.uint8), "RGB")


def _jpeg(image: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    """One JPEG save and load; ``subsampling`` 0, 1, 2 = 4:4:4, 4:2:2, 4:2:0."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


# training-time augmentation recipes by name (``fakespotter train --augment NAME``)
AUGMENTATIONS: dict[str, Callable[[int, int], Callable[[np.ndarray], np.ndarray]]] = {
    "simple": RandomAugmentation,
    "pipeline": PipelineAugmentation,
}


def _parse_one(spec: str) -> Perturbation:
    kind, sep, text = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UserError(f"unknown perturbation {kind!r} in {spec!r} (known: {', '.join(KINDS)})")
    if not sep or not text.strip():
        raise UserError(f"perturbation {spec!r} needs a value: {kind}:N ({KINDS[kind]})")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"perturbation {spec!r}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"perturbation {spec!r}: value must be finite")
    if kind == "jpeg" and not (value == int(value) and 1 <= value <= 100):
        raise UserError(f"perturbation {spec!r}: JPEG quality must be an integer 1-100")
    if kind in ("blur", "noise") and value <= 0:
        raise UserError(f"perturbation {spec!r}: sigma must be > 0")
    if kind == "resize" and not 0 < value < 1:
        raise UserError(f"perturbation {spec!r}: resize factor must be between 0 and 1")
    return Perturbation(kind, value)


def parse_perturbations(spec: str) -> list[Perturbation]:
    """``"jpeg:90,blur:1"`` -> perturbations in the given order; ValueError says what is wrong."""
    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip():
        return []
    if any(not part for part in parts):
        raise UserError(f"empty item in perturbation list {spec!r}")
    found = [_parse_one(part) for part in parts]
    names = [p.name for p in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"perturbation {repeated[0]} is listed twice")
    return found


def perturbed_scores(detector, cropper, paths, perturbations, *, progress: bool = False) -> dict:
    """Score each perturbation's copy of every photo in ``paths``, by its largest face.

    Each perturbation is applied to the decoded photo before face finding, as a re-shared
    photo reaches the detector. A photo whose face is lost to the perturbation (or that can
    no longer be read) counts as predicted real (p_fake 0). Returns name ->
    ``{"p_fake": [...], "n_no_face": k}``, scores in the order of ``paths``.
    """
    import sys

    from tqdm import tqdm

    from fakespotter.faces import ImageError, load_image
    from fakespotter.faces.pipeline import largest_face

    out = {}
    for q in perturbations:
        crops, kept = [], []
        bar = tqdm(
            paths,
            desc=q.name,
            unit="img",
            file=sys.stderr,
            delay=1.0,
            leave=False,
            disable=not progress,
        )
        for i, path in enumerate(bar):
            try:
                faces = cropper(q(load_image(path), image_rng(0, i)))
            except ImageError:
                faces = []
            if faces:
                crops.append(largest_face(faces).crop)
                kept.append(i)
        p_fake = np.zeros(len(paths))
        if crops:
            p_fake[kept] = detector.predict_proba(np.stack(crops))[:, 1]
        out[q.name] = {"p_fake": p_fake.tolist(), "n_no_face": len(paths) - len(kept)}
    return out

"""The web service: one page (``GET /``) and a JSON API (``POST /api/detect``, ``GET /api/model``).

The model loads once, when the app is made. Requests are handled in FastAPI's worker threads;
:class:`~fakespotter.serve.analysis.FaceScorer` serialises the torch work behind one lock.
"""

from __future__ import annotations

import os
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from fakespotter.faces import ImageError, load_image
from fakespotter.serve.analysis import FaceScorer

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif",
                         "image/tiff"})
# Some clients label every upload this way; the decoder then decides.
UNTYPED = frozenset({"", "application/octet-stream"})
MULTIPART_SLACK = 64 * 1024  # room for the multipart headers around the file itself

STATIC_DIR = Path(str(files("fakespotter.serve") / "static"))


class FaceRow(BaseModel):
    """One face (or one reason there is none): the fields of ``fakespotter detect --format json``."""

    path: str
    face: int | None
    box: list[float] | None
    p_fake: float | None
    label: Literal["real", "fake"] | None
    error: str | None
    layer_counts: list[float] | None = None


class ModelInfo(BaseModel):
    backbone: str
    variant: str
    neuron: str
    aligned: bool
    cv_auc: float
    layers: list[str] | None
    neurons: list[int] | None
    real_mean: list[float] | None
    fake_mean: list[float] | None
    training_mean: list[float] | None


class Problem(BaseModel):
    detail: str


def create_app(model_path: str | os.PathLike | None = None, aligned: bool = False, *,
               max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS,
               detector=None, cropper=None) -> FastAPI:
    """The app, with its model loaded.

    ``model_path``: a model file (default: the shipped model). ``aligned``: uploads are
    FFHQ-style aligned faces, no face detection. ``detector``/``cropper``: already loaded
    objects to use instead (tests, or embedding the app in another program).
    """
    if detector is None:
        from fakespotter.detector import default_model_path, load_model

        detector = load_model(model_path if model_path is not None else default_model_path())
    if cropper is None:
        from fakespotter.faces.pipeline import FaceCropper

        bb = detector._backbone()
        cropper = FaceCropper(bb.input_size, bb.alignment_template, aligned=aligned)
    scorer = FaceScorer(detector, cropper)
    layers = scorer.layers.as_dict() if scorer.layers else dict.fromkeys(
        ("layers", "neurons", "real_mean", "fake_mean", "training_mean"))
    model_info = ModelInfo(backbone=detector._backbone().name, variant=detector.variant,
                           neuron=detector.neuron, aligned=cropper.aligned,
                           cv_auc=float(detector.cv_auc_), **layers)

    app = FastAPI(title="fakespotter",
                  summary="Is this face photo real or made by a GAN? (FakeSpotter neuron coverage)")
    app.state.scorer = scorer
    errors = {413: {"model": Problem, "description": "file or image too large"},
              415: {"model": Problem, "description": "not an image"},
              422: {"model": Problem, "description": "unreadable image"}}

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        # Refuse on the declared length, before the body is read and spooled to disk.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes + MULTIPART_SLACK:
            return JSONResponse({"detail": _too_large(int(length), max_bytes)}, status_code=413)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/model", response_model=ModelInfo)
    def model() -> ModelInfo:
        """The loaded model: backbone, feature variant, its layers and their averages."""
        return model_info

    @app.post("/api/detect", response_model=list[FaceRow], responses=errors)
    def detect(image: UploadFile = File(..., description="a photo (JPEG, PNG, WebP, ...)")):
        """Score every face in one photo: one row per face, or one row saying why there is none."""
        ctype = (image.content_type or "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES and ctype not in UNTYPED:
            raise HTTPException(415, f"not an image: content type {ctype!r}")
        data = image.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, _too_large(None, max_bytes))
        name = Path(image.filename or "upload").name
        pixels = _decode(data, Path(name).suffix, max_pixels)
        return scorer.score(pixels, name)

    return app


def _decode(data: bytes, suffix: str, max_pixels: int):
    """Bytes -> RGB array through the same loader as the command line (EXIF, alpha, 16 bit)."""
    if not data:
        raise HTTPException(422, "empty file")
    fd, tmp = tempfile.mkstemp(suffix=suffix[:10], prefix="fakespotter-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_image(tmp, max_pixels=max_pixels, max_bytes=len(data))
    except ImageError as e:
        if e.reason.startswith("not an image"):
            raise HTTPException(415, e.reason) from None
        if e.reason.startswith("image too large"):
            raise HTTPException(413, e.reason) from None
        raise HTTPException(422, e.reason) from None
    finally:
        os.unlink(tmp)


def _too_large(size: int | None, limit: int) -> str:
    got = "" if size is None else f"{size / 1e6:.1f} MB, "
    return f"file too large ({got}limit {limit / 1e6:.1f} MB)"

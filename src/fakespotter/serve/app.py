"""The web service: one page (``GET /``) and a JSON API (``POST /api/detect`` for photos,
``POST /api/detect-video`` for short videos, ``GET /api/model``).

The model loads once, when the app is made. Requests are handled in FastAPI's worker threads;
:class:`~fakespotter.serve.analysis.FaceScorer` serialises the torch work behind one lock.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
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
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_VIDEO_FPS = 2.0
MAX_VIDEO_FRAMES = 120  # sampled frames scored per video: a minute at 2 fps, two at 1 fps
VIDEO_TYPES = frozenset({"application/mp4", "application/x-matroska"})  # besides video/*
VIDEO_PATH = "/api/detect-video"
COPY_CHUNK = 1024 * 1024

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


class VideoTrack(BaseModel):
    """One face followed through the sampled frames: its score in each, and their summary."""

    track: int
    times: list[float]
    boxes: list[list[float]]
    p_fake: list[float]
    n_frames: int
    start: float
    end: float
    mean: float
    max: float
    fraction_fake: float  # share of its frames with p_fake >= 0.5
    label: Literal["real", "fake"]


class VideoSummary(BaseModel):
    """Over all faces of all sampled frames; ``label`` is fake when any track is (None: no face)."""

    n_faces: int
    n_tracks: int
    n_frames_with_faces: int
    mean: float | None
    max: float | None
    fraction_fake: float | None  # share of frames with a face whose highest p_fake >= 0.5
    label: Literal["real", "fake"] | None


class VideoResult(BaseModel):
    """``fakespotter detect clip.mp4 --report``'s JSON, plus how much of the video was seen."""

    path: str
    fps: float
    n_frames: int
    times: list[float]
    tracks: list[VideoTrack]
    video: VideoSummary
    max_frames: int
    truncated: bool  # the video goes on after the last sampled frame scored
    duration: float | None  # seconds, as the container declares it (None: unknown)


class Problem(BaseModel):
    detail: str


def create_app(model_path: str | os.PathLike | None = None, aligned: bool = False, *,
               max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS,
               max_video_bytes: int = MAX_VIDEO_BYTES, max_video_fps: float = MAX_VIDEO_FPS,
               max_video_frames: int = MAX_VIDEO_FRAMES, detector=None, cropper=None) -> FastAPI:
    """The app, with its model loaded.

    ``model_path``: a model file (default: the shipped model). ``aligned``: uploads are
    FFHQ-style aligned faces, no face detection. ``max_*``: upload limits (bytes, pixels of a
    photo; bytes, sampling rate and sampled frames of a video). ``detector``/``cropper``:
    already loaded objects to use instead (tests, or embedding the app in another program).
    """
    if detector is None:
        from fakespotter.detector import default_model_path, load_model

        detector = load_model(model_path if model_path is not None else default_model_path())
    if cropper is None:
        cropper = detector.face_cropper(aligned)
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
        limit = max_video_bytes if request.url.path == VIDEO_PATH else max_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + MULTIPART_SLACK:
            return JSONResponse({"detail": _too_large(int(length), limit)}, status_code=413)
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

    video_errors = {413: {"model": Problem, "description": "file too large"},
                    415: {"model": Problem, "description": "not a video"},
                    422: {"model": Problem, "description": "unreadable video or bad fps"},
                    501: {"model": Problem, "description": "video support is not installed"}}

    @app.post(VIDEO_PATH, response_model=VideoResult, responses=video_errors)
    def detect_video(video: UploadFile = File(..., description="a short video (MP4, WebM, ...)"),
                     fps: float = Form(1.0, description=f"frames sampled per second, at most "
                                                        f"{max_video_fps:g}")):
        """Sample frames, find and follow each face across them, score it in every frame:
        per-track and per-video summaries. At most ``max_frames`` frames are scored."""
        ctype = (video.content_type or "").split(";")[0].strip().lower()
        if not (ctype.startswith("video/") or ctype in VIDEO_TYPES or ctype in UNTYPED):
            raise HTTPException(415, f"not a video: content type {ctype!r}")
        if not (math.isfinite(fps) and 0 < fps <= max_video_fps):
            raise HTTPException(422, f"fps must be above 0 and at most {max_video_fps:g}, "
                                     f"not {fps:g}")
        if importlib.util.find_spec("av") is None:
            raise HTTPException(501, "reading video needs the 'video' extra: "
                                     "pip install 'fakespotter[video]'")
        from fakespotter.video import VIDEO_SUFFIXES, VideoError

        name = Path(video.filename or "upload").name
        suffix = Path(name).suffix.lower()
        with _saved_upload(video, suffix, max_video_bytes) as tmp:
            try:
                result = scorer.scan_video(tmp, name, fps, max_video_frames)
            except VideoError as e:
                reason = re.sub(r"\[Errno -?\d+\] ", "", str(e).replace(tmp, name))
                if ctype in UNTYPED and suffix not in VIDEO_SUFFIXES:
                    raise HTTPException(415, f"not a video: {reason}") from None
                raise HTTPException(422, reason) from None
            duration = _duration(tmp)
        times = result["times"]
        truncated = result["n_frames"] >= max_video_frames and (
            duration is None or duration > times[-1] + 1.0 / fps)
        return {**result, "max_frames": max_video_frames, "truncated": truncated,
                "duration": duration}

    return app


@contextlib.contextmanager
def _saved_upload(upload: UploadFile, suffix: str, limit: int):
    """The upload copied to a temporary file (PyAV reads files), deleted afterwards."""
    fd, tmp = tempfile.mkstemp(suffix=suffix[:10], prefix="fakespotter-upload-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            while chunk := upload.file.read(COPY_CHUNK):
                size += len(chunk)
                if size > limit:  # no or a false Content-Length: counted while copying
                    raise HTTPException(413, _too_large(None, limit))
                f.write(chunk)
        if size == 0:
            raise HTTPException(422, "empty file")
        yield tmp
    finally:
        os.unlink(tmp)


def _duration(path: str) -> float | None:
    """The container's declared duration in seconds, or None when it declares none."""
    import av

    try:
        with av.open(path) as container:
            if container.duration is not None:
                return float(container.duration) / av.time_base
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, OSError, IndexError):
        pass
    return None


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

"""The web service: one page (``GET /``) and a JSON API (``POST /api/detect`` for photos,
``POST /api/detect-video`` for short videos, ``GET /api/model``, ``GET /health``), with its
API docs at ``/docs`` and ``/redoc`` served from the ``fastapi-offline`` package, no CDN.

Every error answers ``{"detail": "<one line of text>"}`` (:class:`Problem`). The model loads
once, when the app is made. The endpoints hand their work to
:class:`~fakespotter.serve.analysis.FaceScorer`'s threads (decoding and face search outside
the network's lock, a lane of its own for large photos) and await it, so every request can be
held to a time limit (:class:`TimeLimit`): 408, 503 or 504 with one line once it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import tempfile
import threading
from concurrent.futures import Executor
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, get_type_hints

import anyio
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import BaseModel, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from fakespotter.errors import first_line
from fakespotter.faces import ImageError
from fakespotter.rows import Row
from fakespotter.serve.analysis import Cancelled, FaceScorer, photo_pixels
from fakespotter.video import VIDEO_SUFFIXES  # only these reach a temporary file's name

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff"}
)
# Some clients label every upload this way; the decoder then decides.
UNTYPED = frozenset({"", "application/octet-stream"})
MULTIPART_SLACK = 64 * 1024  # room for the multipart headers around the file itself
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_VIDEO_FPS = 2.0
MAX_VIDEO_FRAMES = 120  # sampled frames scored per video: a minute at 2 fps, two at 1 fps
VIDEO_TYPES = frozenset({"application/mp4", "application/x-matroska"})  # besides video/*
VIDEO_PATH = "/api/detect-video"
COPY_CHUNK = 1024 * 1024
TIME_LIMIT = 120.0  # seconds a request may take, its upload included (--time-limit)
BUSY_RETRY_AFTER = "10"  # seconds, in a 503's Retry-After
# ISO-BMFF brands of still images (HEIC, AVIF): an "ftyp" box with any other brand is a video
IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})

STATIC_DIR = Path(str(files("fakespotter.serve") / "static"))
DOCS_STATIC = "/docs-static"  # Swagger UI and ReDoc files, from the fastapi-offline package
# The docs pages may load nothing from elsewhere: ReDoc's sidebar shows a logo from its CDN.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'"
)
NO_DOCS = (
    "the API docs page needs the fastapi-offline package (pip install "
    "'fakespotter[serve]'); the API itself is described at /openapi.json"
)


# Every label the API gives, faces' and video tracks': rows.label_for's and
# video.track_label's ("uncertain": inside the model's band below its threshold).
Label = Literal["real", "fake", "uncertain"]

# A web row's fields beyond rows.Row's, with their types and defaults.
WEB_ROW_FIELDS: dict[str, Any] = {
    "layer_counts": (list[float] | None, None),  # active neurons per layer
    # each layer's part of the SVM's decision (analysis.per_face_layers)
    "layer_decision": (list[float] | None, None),
}


def _row_model() -> type[BaseModel]:
    """FaceRow: :class:`fakespotter.rows.Row`'s fields with its types, so the API cannot drift
    from the command line's rows, its label narrowed to :data:`Label`; plus the web's own."""
    types = get_type_hints(Row)
    fields: dict[str, Any] = {f.name: (types[f.name], ...) for f in dataclasses.fields(Row)}
    fields["label"] = (Label | None, ...)
    return create_model(
        "FaceRow",
        __doc__="One face (or one reason there is none): the fields of ``fakespotter detect "
        "--format json`` (``fakespotter.rows.Row``; ``path`` is the uploaded file's name), "
        "plus the face's active neurons per layer and each layer's part of the decision.",
        **fields,
        **WEB_ROW_FIELDS,
    )


FaceRow = _row_model()


class Health(BaseModel):
    """The server is up and has its model loaded."""

    status: Literal["ok"]
    model: str | None  # the model file's identity, as in every row (None: not loaded from a file)
    backbone: str


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
    threshold: float = 0.5  # P(fake) at which a face is labelled fake
    uncertain: list[float] | None = None  # [low, threshold): labelled uncertain
    # [10th, 90th] percentile of each layer's decision part over the real / fake training
    # faces (None: the model file does not carry them)
    decision_real: list[list[float]] | None = None
    decision_fake: list[list[float]] | None = None
    average_p_fake: float | None = None  # the score of the average training face


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
    label: Label
    # per sampled frame, as a photo's row has them (None where not measured)
    detection_scores: list[float | None] = []
    face_sizes: list[int | None] = []
    novelties: list[float | None] = []
    warnings: list[str | None] = []
    # the track's summary of them: lowest detection score, smallest face, highest novelty,
    # each kind of warning once
    detection_score: float | None = None
    face_size: int | None = None
    novelty: float | None = None
    warning: str | None = None


class VideoSummary(BaseModel):
    """Over all faces of all sampled frames; ``label`` is fake when any track is (None: no face)."""

    n_faces: int
    n_tracks: int
    n_frames_with_faces: int
    mean: float | None
    max: float | None
    fraction_fake: float | None  # share of frames with a face whose highest p_fake >= 0.5
    label: Label | None
    fake_ranges: list[list[float]] = []  # [start, end] seconds in which a face is judged fake


class VideoResult(BaseModel):
    """``fakespotter detect clip.mp4 --report``'s JSON, plus how much of the video was seen."""

    path: str
    fps: float
    n_frames: int
    times: list[float]
    tracks: list[VideoTrack]
    video: VideoSummary
    tracking: Literal["identity", "position"] = "position"  # how faces were linked over frames
    max_frames: int
    truncated: bool  # the video goes on after the last sampled frame scored
    duration: float | None  # seconds, as the container declares it (None: unknown)


class Problem(BaseModel):
    """Every error's body (4xx and 5xx): one line of text saying what went wrong, e.g.
    ``{"detail": "missing form field 'image'"}``."""

    detail: str


def create_app(
    model_path: str | os.PathLike | None = None,
    aligned: bool = False,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_UPLOAD_PIXELS,
    max_video_bytes: int = MAX_VIDEO_BYTES,
    max_video_fps: float = MAX_VIDEO_FPS,
    max_video_frames: int = MAX_VIDEO_FRAMES,
    time_limit: float | None = TIME_LIMIT,
    device: str | None = None,
    detector=None,
    cropper=None,
) -> FastAPI:
    """The app, with its model loaded.

    ``model_path``: a model file (default: the shipped model). ``aligned``: uploads are
    FFHQ-style aligned faces, no face detection. ``max_*``: upload limits (bytes, pixels of a
    photo; bytes, sampling rate and sampled frames of a video). ``time_limit``: seconds a
    request may take (None: no limit; :class:`TimeLimit`). ``device``: where the network runs
    (``load_model``'s; default CPU). ``detector``/``cropper``: already loaded
    objects to use instead (tests, or embedding the app in another program); with
    ``detector`` and ``model_path`` both given, ``model_path`` only names the model in rows.
    """
    from fakespotter.modelfile import model_id

    if detector is None:
        from fakespotter.persistence import default_model_path, load_model

        if model_path is None:
            model_path = default_model_path()
        detector = load_model(model_path, device=device)
    if cropper is None:
        cropper = detector.face_cropper(aligned)
    scorer = FaceScorer(detector, cropper, None if model_path is None else model_id(model_path))
    layers = (
        scorer.layers.as_dict()
        if scorer.layers
        else dict.fromkeys(("layers", "neurons", "real_mean", "fake_mean", "training_mean"))
    )
    backbone = detector.network().name
    model_info = ModelInfo(
        backbone=backbone,
        variant=detector.variant,
        neuron=detector.neuron,
        aligned=cropper.aligned,
        cv_auc=float(detector.cv_auc_),
        threshold=float(detector.operating_point_.threshold),
        uncertain=_band(detector),
        **layers,
    )

    app = FastAPI(
        title="fakespotter",
        summary="Is this face photo real or made by a GAN? (FakeSpotter neuron coverage)",
        description="Upload a photo to `POST /api/detect` as the multipart form field "
        "`image`, or a short video to `POST /api/detect-video` as the "
        "field `video` (and optionally `fps`). Every error answers "
        '`{"detail": "<one line of text>"}`.',
        docs_url=None,
        redoc_url=None,
    )  # offline versions below
    app.state.scorer = scorer
    _add_error_handlers(app)
    _add_docs(app)
    # the type FastAPI declares for `responses`
    slow: dict[int | str, dict[str, Any]] = {
        408: {"model": Problem, "description": "the upload did not arrive within the time limit"},
        503: {"model": Problem, "description": "busy: the request waited out its time limit"},
        504: {"model": Problem, "description": "the request took longer than its time limit"},
    }
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": Problem, "description": "file or image too large"},
        415: {"model": Problem, "description": "not an image (a video: use /api/detect-video)"},
        422: {
            "model": Problem,
            "description": "unreadable image, or the form field `image` is missing",
        },
        **slow,
    }

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        # Refuse on the declared length, before the body is read and spooled to disk.
        video = request.url.path == VIDEO_PATH
        limit = max_video_bytes if video else max_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + MULTIPART_SLACK:
            option = "--max-video-bytes" if video else "--max-bytes"
            return JSONResponse({"detail": _too_large(int(length), limit, option)}, status_code=413)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """Whether the server is up, and which model it scores with."""
        return Health(status="ok", model=scorer.model, backbone=backbone)

    @app.get("/api/model", response_model=ModelInfo)
    def model() -> ModelInfo:
        """The loaded model: backbone, feature variant, its layers and their averages."""
        return model_info

    # FaceRow is made by create_model, which mypy cannot follow
    @app.post("/api/detect", response_model=list[FaceRow], responses=errors)  # type: ignore[valid-type]
    async def detect(
        request: Request,
        image: UploadFile = File(..., description="a photo (JPEG, PNG, WebP, ...)"),
    ):
        """Score every face in one photo, uploaded as the multipart form field `image`
        (`curl -F image=@photo.jpg .../api/detect`): one row per face, numbered left to
        right, or one row saying why there is none. The rows are `fakespotter detect
        --format json`'s, plus `layer_counts`."""
        ctype = (image.content_type or "").split(";")[0].strip().lower()
        name = _client_name(image.filename)
        if ctype.startswith("video/") or ctype in VIDEO_TYPES:
            raise HTTPException(415, _video_not_photo(f"content type {ctype!r}"))
        if ctype not in IMAGE_TYPES and ctype not in UNTYPED:
            raise HTTPException(415, f"not an image: content type {ctype!r}")
        data = await image.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, _too_large(None, max_bytes, "--max-bytes"))
        if not data:
            raise HTTPException(422, "empty file")
        cancelled = threading.Event()
        # decoding and face search on the lane for the photo's size, outside the network's
        # lock: a huge photo holds up neither ordinary ones nor the network
        lane = scorer.photo_lane(await anyio.to_thread.run_sync(photo_pixels, data))
        try:
            faces = await _in_lane(
                request, lane, cancelled, scorer.faces_in, data, max_pixels, cancelled
            )
        except ImageError as e:
            raise _image_error(e, data, name) from None
        return await _in_lane(request, scorer.network, cancelled, scorer.score_faces, faces, name)

    video_errors: dict[int | str, dict[str, Any]] = {
        413: {"model": Problem, "description": "file too large"},
        415: {"model": Problem, "description": "not a video"},
        422: {
            "model": Problem,
            "description": "unreadable video, bad fps, or the form field `video` is missing",
        },
        501: {"model": Problem, "description": "video support is not installed"},
        **slow,
    }

    @app.post(VIDEO_PATH, response_model=VideoResult, responses=video_errors)
    async def detect_video(
        request: Request,
        video: UploadFile = File(..., description="a short video (MP4, WebM, ...)"),
        fps: float = Form(1.0, description=f"frames sampled per second, at most {max_video_fps:g}"),
    ):
        """Score a short video, uploaded as the multipart form field `video`, with the
        optional form field `fps` (`curl -F video=@clip.mp4 -F fps=1 .../api/detect-video`):
        sample frames, find and follow each face across them, score it in every frame;
        per-track and per-video summaries. At most `max_frames` frames are scored."""
        ctype = (video.content_type or "").split(";")[0].strip().lower()
        if not (ctype.startswith("video/") or ctype in VIDEO_TYPES or ctype in UNTYPED):
            photo = " (photos go to /api/detect)" if ctype.startswith("image/") else ""
            raise HTTPException(415, f"not a video: content type {ctype!r}{photo}")
        if not (math.isfinite(fps) and 0 < fps <= max_video_fps):
            hint = "; start the server with --max-video-fps to raise it" if fps > 0 else ""
            raise HTTPException(
                422, f"fps must be above 0 and at most {max_video_fps:g}, not {fps:g}{hint}"
            )
        if importlib.util.find_spec("av") is None:
            raise HTTPException(
                501, "reading video needs the 'video' extra: pip install 'fakespotter[video]'"
            )
        from fakespotter.video import VideoError

        name = _client_name(video.filename)
        suffix = Path(name).suffix.lower()
        cancelled = threading.Event()

        def scan() -> tuple[dict, float | None]:  # on the video lane's thread
            with _saved_upload(video, suffix, max_video_bytes, cancelled) as tmp:
                try:
                    result = scorer.scan_video(
                        tmp, name, fps, max_video_frames, cancelled, max_pixels=max_pixels
                    )
                except VideoError as e:
                    reason = re.sub(r"\[Errno -?\d+\] ", "", str(e).replace(tmp, name))
                    if ctype in UNTYPED and suffix not in VIDEO_SUFFIXES:
                        raise HTTPException(415, f"not a video: {reason}") from None
                    raise HTTPException(422, reason) from None
                return result, _duration(tmp)

        result, duration = await _in_lane(request, scorer.video_lane, cancelled, scan)
        times = result["times"]
        truncated = result["n_frames"] >= max_video_frames and (
            duration is None or duration > times[-1] + 1.0 / fps
        )
        return {
            **result,
            "max_frames": max_video_frames,
            "truncated": truncated,
            "duration": duration,
        }

    # outermost of the app's own layers: the limit covers the upload, the middleware above
    # and the endpoint
    app.add_middleware(TimeLimit, seconds=time_limit)
    return app


class TimeLimit:
    """Hold every request to ``seconds`` (None: no limit), its upload included: once they
    pass, the request is given up and answered with one line: 408 while its body is still
    arriving (a client dribbling its upload), 503 when its work never got a thread (the
    server is busy; with Retry-After), else 504. Work not started is dropped; a photo's face
    search or a video's scan under way stops at its next step (after decoding, at the next
    frame). An answer already begun is left to finish."""

    def __init__(self, app, seconds: float | None) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.seconds is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # Request.state: _in_lane marks "queued" here
        answering = received = False

        async def receiving():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                received = True
            return message

        async def sending(message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        with anyio.move_on_after(self.seconds) as limit:
            await self.app(scope, receiving, sending)
        if not limit.cancelled_caught or answering:
            return
        took = f"{self.seconds:g} s"
        hint = "start the server with --time-limit to raise it"
        headers = None
        if not received:
            status, detail = 408, f"the upload took longer than {took} to arrive ({hint})"
        elif state.get("queued"):
            status, detail = 503, f"server busy: the request waited {took} for its turn; try again"
            headers = {"retry-after": BUSY_RETRY_AFTER}
        else:
            status, detail = 504, f"the request took longer than {took} ({hint})"
        await JSONResponse({"detail": detail}, status, headers)(scope, receive, send)


async def _in_lane(request: Request, lane: Executor, cancelled: threading.Event, fn, *args):
    """``fn(*args)`` on one of ``lane``'s threads, awaited. When the request is given up
    (:class:`TimeLimit`), work not yet started is dropped and work under way is told to stop
    through ``cancelled`` (the caller passes it to ``fn`` where ``fn`` can stop)."""
    job = lane.submit(fn, *args)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        cancelled.set()
        if job.cancel():  # never started: the server was busy
            request.state.queued = True
        raise


def _add_error_handlers(app: FastAPI) -> None:
    """One body for every error: ``{"detail": "<one line>"}`` (FastAPI's own 422s are lists)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        if not is_body_allowed_for_status_code(exc.status_code):
            return Response(status_code=exc.status_code, headers=headers)
        return JSONResponse(
            {"detail": first_line(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):  # logged by the server too
        return JSONResponse(
            {"detail": f"internal server error ({type(exc).__name__}); see the server's log"},
            status_code=500,
        )


def _band(detector) -> list[float] | None:
    """[low, threshold) labelled uncertain, as rows.label_for applies it (None: no band)."""
    band = detector.operating_point_.band
    return None if band is None else [float(v) for v in band]


def _docs_assets() -> Path | None:
    """The folder of Swagger UI and ReDoc files that fastapi-offline ships (None: missing)."""
    spec = importlib.util.find_spec("fastapi_offline")  # found, not imported
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "static" / "swagger-ui-bundle.js").is_file():
            return Path(folder) / "static"
    return None


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from local files; one line when they are missing."""
    assets = _docs_assets()
    if assets is not None:
        app.mount(DOCS_STATIC, StaticFiles(directory=assets), name="docs-static")

    def missing() -> JSONResponse:
        return JSONResponse({"detail": NO_DOCS}, status_code=501)

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> Response:
        if assets is None:
            return missing()
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            oauth2_redirect_url=None,
            # no spec validation badge: it loads from swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["content-security-policy"] = DOCS_POLICY
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> Response:
        if assets is None or not (assets / "redoc.standalone.js").is_file():
            return missing()
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["content-security-policy"] = DOCS_POLICY
        return page


_PLACES = {
    "body": "form field",
    "query": "query parameter",
    "path": "path parameter",
    "header": "header",
    "cookie": "cookie",
}


def _validation_message(errors) -> str:
    """FastAPI's list of validation errors as one line, e.g. ``missing form field 'image'``."""
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        place = _PLACES.get(loc[0], loc[0]) if loc else "request"
        name = ".".join(loc[1:])
        msg = str(error.get("msg", "invalid"))
        msg = msg[:1].lower() + msg[1:]
        if error.get("type") == "missing" and name:
            parts.append(f"missing {place} {name!r}")
        elif name:
            parts.append(f"{place} {name!r}: {msg}")
        else:
            parts.append(f"request {place}: {msg}")
    return first_line("; ".join(parts)) if parts else "invalid request"


@contextlib.contextmanager
def _saved_upload(
    upload: UploadFile, suffix: str, limit: int, cancelled: threading.Event | None = None
):
    """The upload copied to a temporary file (PyAV reads files), deleted afterwards. Its name
    is never made from the client's: only a known video suffix is kept (a NUL byte in it made
    mkstemp fail)."""
    safe = suffix if suffix in VIDEO_SUFFIXES else ""
    fd, tmp = tempfile.mkstemp(suffix=safe, prefix="fakespotter-upload-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            while chunk := upload.file.read(COPY_CHUNK):
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                size += len(chunk)
                if size > limit:  # no or a false Content-Length: counted while copying
                    raise HTTPException(413, _too_large(None, limit, "--max-video-bytes"))
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


def _client_name(filename: str | None) -> str:
    """The uploaded file's name as rows show it: its last part, control characters (a NUL
    byte, a line break) as "?". Shown only, never used to name a file."""
    name = Path(filename or "upload").name or "upload"
    return re.sub(r"[\x00-\x1f\x7f]", "?", name)


def _looks_like_video(data: bytes, name: str) -> bool:
    """A video container by its first bytes (MP4/MOV, Matroska/WebM, AVI) or its suffix."""
    head = data[:16]
    if head[4:8] == b"ftyp":  # ISO-BMFF: a video unless its brand is a still image's
        return head[8:12] not in IMAGE_BRANDS
    if head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return True
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


def _video_not_photo(what: str) -> str:
    return f"a video, not a photo ({what}): send videos to {VIDEO_PATH} as the form field 'video'"


def _image_error(e: ImageError, data: bytes, name: str) -> HTTPException:
    """An unreadable upload's answer, with the command line's hints in the server's words."""
    if e.reason.startswith("not an image"):
        if _looks_like_video(data, name):
            return HTTPException(415, _video_not_photo(name))
        return HTTPException(415, e.reason)
    if e.reason.startswith("image too large"):
        reason = e.reason.replace(
            "--max-pixels raises it", "start the server with --max-pixels to raise it"
        )
        return HTTPException(413, reason)
    return HTTPException(422, e.reason)


def _too_large(size: int | None, limit: int, option: str) -> str:
    got = "" if size is None else f"{size / 1e6:.1f} MB, "
    return (
        f"file too large ({got}limit {limit / 1e6:.1f} MB; start the server with {option} "
        "to raise it)"
    )

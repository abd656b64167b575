"""`fakespotter serve`: run the web page and JSON API (fakespotter.serve) with uvicorn."""

from __future__ import annotations

import click

from fakespotter.cli.options import aligned_option, limit_options, model_option
from fakespotter.errors import UserError, first_line

# The server's own limits (fakespotter.serve.app's MAX_*), repeated here so `serve --help`
# works without the 'serve' extra; tests check that they agree.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_VIDEO_FRAMES = 120
MAX_VIDEO_FPS = 2.0
TIME_LIMIT = 120.0


@click.command(name="serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 exposes it to the network).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@model_option
@aligned_option
@limit_options(max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_UPLOAD_PIXELS)
@click.option(
    "--max-video-bytes",
    type=click.IntRange(min=1),
    default=MAX_VIDEO_BYTES,
    show_default=True,
    help="Refuse videos larger than this many bytes.",
)
@click.option(
    "--max-video-frames",
    type=click.IntRange(min=1),
    default=MAX_VIDEO_FRAMES,
    show_default=True,
    help="Score at most this many sampled frames of a video; the rest is not seen.",
)
@click.option(
    "--max-video-fps",
    type=click.FloatRange(min=0, min_open=True),
    default=MAX_VIDEO_FPS,
    show_default=True,
    help="Refuse video requests that sample more frames per second than this.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=TIME_LIMIT,
    show_default=True,
    help="Seconds a request may take, its upload included: then it is answered 408 (upload "
    "still arriving), 503 (busy: it never got its turn) or 504.",
)
def serve_command(
    host: str,
    port: int,
    model_path: str | None,
    aligned: bool,
    max_bytes: int,
    max_pixels: int,
    max_video_bytes: int,
    max_video_frames: int,
    max_video_fps: float,
    time_limit: float,
) -> None:
    """Serve a web page and a JSON API (POST /api/detect, /api/detect-video) that score
    uploaded photos and short videos.

    The global options apply: `fakespotter --device cuda --threads 4 serve`."""
    # the group's global options; none when serve runs on its own (load_model's defaults)
    settings = click.get_current_context().find_root().obj or {}
    try:
        import uvicorn

        from fakespotter.serve.app import create_app
    except ImportError as e:
        raise click.ClickException(
            f"serving needs the 'serve' extra: pip install "
            f"'fakespotter[serve]' ({e.name} is missing)"
        ) from None
    if settings.get("threads"):
        import torch

        torch.set_num_threads(int(settings["threads"]))
    try:
        app = create_app(
            model_path,
            aligned,
            max_bytes=max_bytes,
            max_pixels=max_pixels,
            max_video_bytes=max_video_bytes,
            max_video_fps=max_video_fps,
            max_video_frames=max_video_frames,
            time_limit=time_limit,
            device=settings.get("device"),
        )
    except (UserError, OSError) as e:  # bad model file, missing weights: one line
        raise click.ClickException(first_line(e)) from None
    click.echo(f"fakespotter: open http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info")

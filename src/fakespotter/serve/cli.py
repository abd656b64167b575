"""``fakespotter serve``: run the web page and JSON API with uvicorn."""

from __future__ import annotations

import click

from fakespotter.cli import SafePath


@click.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--model", "model_path", type=SafePath(dir_okay=False),
              help="Model file from `fakespotter train` (default: the shipped model).")
@click.option("--aligned", is_flag=True,
              help="Uploads are already aligned face crops (FFHQ style): skip face detection.")
def serve_command(host: str, port: int, model_path: str | None, aligned: bool) -> None:
    """Serve a web page and a JSON API (POST /api/detect, /api/detect-video) that score
    uploaded photos and short videos."""
    try:
        import uvicorn

        from fakespotter.serve.app import create_app
    except ImportError as e:
        raise click.ClickException(f"serving needs the 'serve' extra: pip install "
                                   f"'fakespotter[serve]' ({e.name} is missing)") from None
    try:
        app = create_app(model_path, aligned)
    except (ValueError, OSError) as e:  # bad model file, missing weights: one line
        raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__)
    click.echo(f"fakespotter: open http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info")

"""The page in a real browser: Debian's Chromium driven by Playwright, against uvicorn on
127.0.0.1. Skipped when Chromium, Playwright or the weights are missing."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
uvicorn = pytest.importorskip("uvicorn", reason="the 'serve' extra (uvicorn) is not installed")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

from fakespotter.serve.app import create_app  # noqa: E402


@pytest.fixture
def model_file(request, weight_file) -> Path:
    """The shipped model when this checkout has one (the page as users see it), else a tiny
    dlib model trained on noise 'faces' (conftest's tiny_model)."""
    from fakespotter.persistence import default_model_path

    try:
        path = default_model_path()
        weight_file("facenet")
        return Path(str(path))
    except FileNotFoundError:
        pass
    return request.getfixturevalue("tiny_model")


@pytest.fixture
def server_url(model_file, weight_file):
    """The app served by uvicorn in a thread, on a free port of 127.0.0.1."""
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    app = create_app(model_file, aligned=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_upload_shows_box_score_verdict_and_chart(server_url, tmp_path):
    outside, problems = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})

            def only_local(route):  # the page must work with no network but this server
                if route.request.url.startswith(server_url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server_url + "/")
            page.wait_for_function("document.getElementById('model-line').textContent !== ''")
            info = page.request.get(server_url + "/api/model").json()
            # the page says at what score a face is called fake (the model's operating point)
            assert f"fake at P(fake) ≥ {info['threshold']:.3f}" in page.text_content("#model-line")
            page.set_input_files("#file", str(ASTRONAUT))
            page.wait_for_selector("#overlay rect.face-box", timeout=60_000)
            page.wait_for_selector("#chart polyline")

            assert page.locator("#overlay rect.face-box").count() == 1
            score = page.text_content("#overlay text.face-score")
            assert score.startswith("1: ") and score.endswith("%")
            verdict = page.text_content("#verdict")
            assert "probability of being GAN-made" in verdict
            # the face's counts against the real and fake training averages; a point per layer
            n_layers = len(page.request.get(server_url + "/api/model").json()["layers"])
            assert page.locator("#chart polyline").count() == 3
            assert page.locator("#chart circle.layer-point").count() == n_layers
            box = page.locator("#overlay rect.face-box").bounding_box()
            img = page.locator("#photo").bounding_box()
            centre = (box["x"] + box["width"] / 2 - img["x"]) / img["width"]
            assert 0.3 < centre < 0.55  # her face, in photo-relative coordinates

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert outside == [] and problems == []
    assert Image.open(shot).size[0] == 1200
    if os.environ.get("FAKESPOTTER_SCREENSHOT"):  # how docs/screenshot.png is made
        shutil.copy(shot, os.environ["FAKESPOTTER_SCREENSHOT"])


def test_video_upload_shows_verdict_tracks_and_timeline(server_url, tmp_path):
    pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
    from test_video import write_panning_video

    clip = tmp_path / "pan.mp4"
    write_panning_video(clip)  # 2 s of the astronaut's face, sliding left
    problems = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server_url + "/")
            page.select_option("#fps", "2")
            page.set_input_files("#file", str(clip))
            page.wait_for_selector("#timeline circle.track-point", timeout=60_000)

            assert page.is_hidden("#result") and page.is_visible("#video-result")
            assert page.locator("#timeline polyline.track-line").count() == 1
            assert page.locator("#timeline circle.track-point").count() == 4  # 2 s at 2 fps
            assert page.locator("#timeline line.threshold").count() == 1
            [track] = page.locator("#tracks li").all_text_contents()
            assert track.startswith("Face 1: ") and "judged fake in" in track
            assert "probability of being GAN-made" in page.text_content("#video-verdict")
            assert page.text_content("#status").startswith("4 frames sampled, 1 face followed")
        finally:
            browser.close()
    assert problems == []

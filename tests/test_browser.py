"""The page in a real browser: Debian's Chromium driven by Playwright, against uvicorn on
127.0.0.1. Skipped when Chromium, Playwright or the weights are missing."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import serving
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
    """The app served by uvicorn in a thread, on a free port of 127.0.0.1 (conftest.serving)."""
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    with serving(create_app(model_file, aligned=False)) as url:
        yield url


@pytest.mark.slow
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
            with page.expect_response("**/api/detect", timeout=60_000) as answer:
                page.set_input_files("#file", str(ASTRONAUT))
            [row] = answer.value.json()
            assert "layer_decision" in row, "the API row lacks layer_decision (serve/app.py)"
            page.wait_for_selector("#overlay rect.face-box", timeout=60_000)
            page.wait_for_selector("#chart rect.layer-bar")

            assert page.locator("#overlay rect.face-box").count() == 1
            score = page.text_content("#overlay text.face-score")
            assert score.startswith("0: ")  # the row's `face`, as in the JSON
            verdict = page.text_content("#verdict")
            assert verdict.startswith("Face 0: ") and "probability of being GAN-made" in verdict
            # what moved the score: a bar per layer, its part of the classifier's decision
            n_layers = len(page.request.get(server_url + "/api/model").json()["layers"])
            assert page.locator("#chart rect.layer-bar").count() == n_layers
            summary = page.text_content("#chart-summary")
            assert " push" in summary and "of all the push" in summary
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


@pytest.mark.slow
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
            # the dashed line is the model's threshold, and the caption says so
            threshold = page.request.get(server_url + "/api/model").json()["threshold"]
            caption = page.text_content("#timeline-figure figcaption")
            assert f"dashed: {round(threshold * 100)}%, the model's threshold" in caption
            assert "dashed: 50%" not in caption or round(threshold * 100) == 50
            # the band as every label applies it (rows.uncertain_band): from 50% here
            band = page.request.get(server_url + "/api/model").json()["uncertain"]
            assert band is None or f"uncertain, from {round(band[0] * 100)}%" in caption
            [track] = page.locator("#tracks li").all_text_contents()
            assert track.startswith("Face 0: ") and "judged fake in" in track  # the JSON's
            style = page.eval_on_selector("#tracks", "e => getComputedStyle(e).listStyleType")
            assert style == "none"  # no list numbers from 1 beside them
            assert "probability of being GAN-made" in page.text_content("#video-verdict")
            assert page.text_content("#status").startswith("4 frames sampled, 1 face followed")
        finally:
            browser.close()
    assert problems == []


@contextlib.contextmanager
def page_of(server_url, model_extra: dict | None = None):
    """A page of the server in headless Chromium, with the errors it reports; the page reads
    ``model_extra`` as part of ``/api/model`` when given."""
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            if model_extra:
                page.route(
                    "**/api/model",
                    lambda route: route.fulfill(json={**route.fetch().json(), **model_extra}),
                )
            page.goto(server_url + "/")
            page.wait_for_function("document.getElementById('model-line').textContent !== ''")
            yield page, problems
        finally:
            browser.close()


def api_model(server_url) -> dict:
    """The server's /api/model."""
    import json
    import urllib.request

    with urllib.request.urlopen(server_url + "/api/model") as answer:
        return json.load(answer)


def group_photo(path: Path, n: int = 4) -> Path:
    """A 1024 x 300 photo of ``n`` faces side by side (the astronaut's, issue #27's case)."""
    face = Image.open(ASTRONAUT).convert("RGB").crop((110, 20, 330, 280)).resize((190, 248))
    photo = Image.new("RGB", (1024, 300), (90, 110, 130))
    for k in range(n):  # close together, the last one at the right edge
        photo.paste(face, (1024 - 190 - 200 * (n - 1 - k), 26))
    photo.save(path, quality=95)
    return path


@pytest.mark.slow
def test_group_photo_tags_stay_in_the_photo_apart_and_carry_the_json_numbers(server_url, tmp_path):
    with page_of(server_url) as (page, problems):
        with page.expect_response("**/api/detect", timeout=60_000) as answer:
            page.set_input_files("#file", str(group_photo(tmp_path / "group.jpg")))
        rows = [r for r in answer.value.json() if not r["error"]]
        page.wait_for_selector("#overlay rect.face-box")
        assert len(rows) == 4, rows
        tags = page.locator("#overlay text.face-score").all_text_contents()
        assert [t.split(":")[0] for t in tags] == [str(r["face"]) for r in rows] == list("0123")
        cards = page.locator("#faces li").all_text_contents()
        assert [c.split(":")[0] for c in cards] == [f"Face {r['face']}" for r in rows]
        assert page.eval_on_selector("#faces", "e => getComputedStyle(e).listStyleType") == "none"
        assert page.text_content("#verdict").split(":")[0] in {f"Face {r['face']}" for r in rows}
        # each tag's background inside the photo's 1024 x 300 and clear of the others
        boxes = page.eval_on_selector_all(
            "#overlay rect.tag-bg",
            "els => els.map(e => ['x', 'y', 'width', 'height'].map(k => +e.getAttribute(k)))",
        )
        assert len(boxes) == 4
        for x, y, w, h in boxes:
            assert 0 <= x and x + w <= 1024 + 1e-6 and 0 <= y and y + h <= 300 + 1e-6, boxes
        for i, (x, y, w, h) in enumerate(boxes):
            for u, v, ww, hh in boxes[i + 1 :]:
                assert min(x + w, u + ww) <= max(x, u) or min(y + h, v + hh) <= max(y, v), boxes
        # and every tag's text fits its background
        texts = page.eval_on_selector_all(
            "#overlay text.face-score", "els => els.map(e => e.getBBox().width)"
        )
        assert all(t < w for t, (_, _, w, _) in zip(texts, boxes, strict=True))
        if os.environ.get("FAKESPOTTER_SHOTS"):
            page.screenshot(path=f"{os.environ['FAKESPOTTER_SHOTS']}/group.png", full_page=True)
    assert problems == []


@pytest.mark.slow
def test_verdict_words_agree_with_the_score_and_an_unlike_face_says_so_first(server_url, tmp_path):
    """Issue #27 (14, 17): 53% was "Leaning real"; a face unlike the training faces was
    "Likely a real photo - 0%" with a note under it."""
    shown = {"p_fake": 0.533, "label": "uncertain", "warning": None}
    rows: list[dict] = []
    # what moved the score, against the training faces' spreads where the model has them
    n = len(api_model(server_url)["layers"])
    shown["layer_decision"] = [0.01 * (k - n // 2) for k in range(n)]
    spreads = {
        "decision_real": [[-0.5, 0.1]] * n,
        "decision_fake": [[-0.1, 0.5]] * n,
        "average_p_fake": 0.73,
    }

    def rewrite(route):  # the server's answer, with this row's score, label and warning
        route.fulfill(json=[dict(rows[0], **shown)])

    with page_of(server_url, spreads) as (page, problems):
        threshold = page.request.get(server_url + "/api/model").json()["threshold"]
        image = {"name": "a.jpg", "mimeType": "image/jpeg", "buffer": ASTRONAUT.read_bytes()}
        answer = page.request.post(server_url + "/api/detect", multipart={"image": image})
        rows.extend(answer.json())
        page.route("**/api/detect", rewrite)
        page.set_input_files("#file", str(ASTRONAUT))
        page.wait_for_selector("#overlay rect.face-box", timeout=60_000)
        verdict = page.text_content("#verdict")
        assert verdict.startswith("Face 0: Uncertain — 53% probability"), verdict
        note = page.text_content("#verdict-note")  # and why: the model's operating point
        assert note.startswith("More likely GAN-made than not, but under the "), note
        assert f"under the {round(threshold * 100)}% from which this model calls" in note
        assert page.locator("#chart rect.layer-bar").count() == n
        assert (
            page.locator("#chart rect.layer-bar.bar-fake").count() == n - n // 2
        )  # the parts >= 0
        assert page.locator("#chart line.range-real").count() == n
        assert page.locator("#chart line.range-fake").count() == n
        summary = page.text_content("#chart-summary")
        assert summary.startswith("The average training face scores 73%; this face's layers")

        shown.update(p_fake=0.002, label="real", warning="unlike the faces the model was "
                     "trained on (novelty 2.31 > 1.47): read its score with care")  # fmt: skip
        page.set_input_files("#file", str(shutil.copy(ASTRONAUT, tmp_path / "again.jpg")))
        page.wait_for_function(
            "document.getElementById('verdict').textContent.includes(\"Can't tell\")",
            timeout=60_000,
        )
        verdict = page.text_content("#verdict")
        assert verdict.startswith(
            "Face 0: Can't tell: unlike the faces the model was trained on."
        ), verdict
        assert verdict.index("Can't tell") < verdict.index("0% probability")
        assert "real photo" not in verdict and page.is_hidden("#verdict-note")
        assert page.text_content("#overlay text.face-score") == "0: can't tell"
        assert page.locator("#overlay rect.face-box.cant-tell.flagged").count() == 1
        assert "novelty 2.31" in page.text_content("#verdict-warning")
        if os.environ.get("FAKESPOTTER_SHOTS"):
            page.screenshot(path=f"{os.environ['FAKESPOTTER_SHOTS']}/cant_tell.png", full_page=True)
    assert problems == []

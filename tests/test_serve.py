"""The web service: page, OpenAPI, offline docs, health, scoring uploads (photos and videos),
upload limits, hostile uploads, slow photos and time limits, one-line error bodies,
concurrent requests, the serve command's options. Under load on a real server:
test_serve_load.py."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import serving
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi) is not installed")
pytest.importorskip("multipart", reason="the 'serve' extra (python-multipart) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from fakespotter.cli import main  # noqa: E402
from fakespotter.cli.serve import serve_command  # noqa: E402
from fakespotter.operating_point import OperatingPoint
from fakespotter.rows import FIELDS  # noqa: E402
from fakespotter.serve import app as app_module  # noqa: E402
from fakespotter.serve.app import create_app  # noqa: E402

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"
DETECT_FIELDS = set(FIELDS)  # the fields of `detect --format json`
_shared: dict = {}  # one trained model and loaded detector for the whole file


def noise_face(seed: int, smooth: bool, size: int = 96) -> Image.Image:
    """Noise 'faces' as in test_cli: blurred ones are the 'fake' class."""
    im = Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    )
    return im.resize((24, 24)).resize((size, size), Image.Resampling.BICUBIC) if smooth else im


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def model_file(tiny_model) -> Path:
    """conftest's dlib `layer` model trained on noise faces (blurred noise is 'fake')."""
    return tiny_model


@pytest.fixture
def detector(model_file):
    if "detector" not in _shared:
        from fakespotter.persistence import load_model

        _shared["detector"] = load_model(model_file)
    return _shared["detector"]


@pytest.fixture
def aligned_client(detector) -> TestClient:
    return TestClient(create_app(detector=detector, aligned=True))


def post(client: TestClient, data: bytes, name: str = "face.png", ctype: str = "image/png"):
    return client.post("/api/detect", files={"image": (name, data, ctype)})


def test_page_and_its_files_load_without_the_internet(aligned_client):
    page = aligned_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "/static/app.js" in page.text
    assert 'accept="image/*,video/*"' in page.text
    script = aligned_client.get("/static/app.js")
    assert script.status_code == 200 and "/api/detect" in script.text
    assert "/api/detect-video" in script.text
    assert aligned_client.get("/static/style.css").status_code == 200
    for text in (page.text, script.text):
        assert "https://" not in text and "cdn" not in text.lower()


def test_openapi_and_model_info(aligned_client, detector):
    spec = aligned_client.get("/openapi.json").json()
    assert "post" in spec["paths"]["/api/detect"] and "get" in spec["paths"]["/api/model"]
    assert {"413", "415", "422"} <= set(spec["paths"]["/api/detect"]["post"]["responses"])
    assert {"413", "415", "422"} <= set(spec["paths"]["/api/detect-video"]["post"]["responses"])
    info = aligned_client.get("/api/model").json()
    assert info["backbone"] == "dlib" and info["variant"] == "layer" and info["aligned"] is True
    assert info["layers"] == list(detector.taps_)
    assert len(info["neurons"]) == len(info["training_mean"]) == len(detector.taps_)
    assert all(0 <= m <= n for m, n in zip(info["training_mean"], info["neurons"], strict=False))
    # `train` stores the class averages the page draws a face against
    assert len(info["real_mean"]) == len(info["fake_mean"]) == len(detector.taps_)


def test_detect_matches_the_command_line(detector, model_file, tmp_path):
    from fakespotter.modelfile import model_id

    client = TestClient(create_app(model_file, aligned=True, detector=detector))
    path = tmp_path / "blurred.png"
    noise_face(7, smooth=True).save(path)
    r = post(client, path.read_bytes(), name="blurred.png")
    assert r.status_code == 200, r.text
    [row] = r.json()
    cli = CliRunner().invoke(
        main, ["detect", str(path), "--model", str(model_file), "--aligned", "--format", "json"]
    )
    [expected] = json.loads(cli.stdout)
    assert set(row) == DETECT_FIELDS | set(app_module.WEB_ROW_FIELDS)
    assert row["path"] == "blurred.png" and row["label"] == expected["label"] == "fake"
    assert row["box"] == expected["box"] == [0.0, 0.0, 96.0, 96.0]
    assert row["p_fake"] == pytest.approx(expected["p_fake"], abs=1e-9)
    # every other field of the command line's row, the same: a noise "face" is flagged
    for key in set(expected) - {"path", "p_fake"}:
        assert row[key] == expected[key], key
    assert row["model"] == model_id(model_file) and row["face_size"] == 96
    assert row["warning"].startswith("does not look like a face")
    assert len(row["layer_counts"]) == 30 and all(c >= 0 for c in row["layer_counts"])


def test_rows_are_numbered_left_to_right_with_their_own_layer_counts(detector, monkeypatch):
    from fakespotter.faces.pipeline import FaceCrop
    from fakespotter.serve.analysis import per_layer

    client = TestClient(create_app(detector=detector, aligned=True))
    scorer = client.app.state.scorer
    size = scorer.cropper.size
    crops = [np.asarray(noise_face(40 + i, smooth=bool(i % 2), size=size)) for i in range(3)]
    # found right to left, the middle one small and barely detected
    boxes = [(300.0, 10.0, 400.0, 110.0), (150.0, 20.0, 190.0, 60.0), (0.0, 0.0, 100.0, 100.0)]
    faces = [
        FaceCrop(b, score, np.zeros((5, 2)), c, size=b[2] - b[0])
        for b, score, c in zip(boxes, (0.99, 0.8, 0.98), crops, strict=False)
    ]
    monkeypatch.setattr(scorer, "cropper", lambda image: faces)
    r = post(client, png_bytes(noise_face(1, smooth=False)))
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [row["face"] for row in rows] == [0, 1, 2]
    assert [row["box"][0] for row in rows] == [0.0, 150.0, 300.0]
    assert [row["detection_score"] for row in rows] == [0.98, 0.8, 0.99]
    assert [row["face_size"] for row in rows] == [100, 40, 100]
    # no face-finding warning on the other two (these noise crops may be flagged as unlike
    # the tiny model's training faces: that is the novelty signal, tested on its own)
    for row in (rows[0], rows[2]):
        assert row["warning"] is None or row["warning"].startswith("unlike the faces"), row
    assert "low face-detection confidence" in rows[1]["warning"]
    assert "small face (40 px" in rows[1]["warning"]
    counts = per_layer(detector, detector.transform(np.stack(crops)))
    p_fake = detector.predict_proba(np.stack(crops))[:, 1]
    for row, i in zip(
        rows, (2, 1, 0), strict=False
    ):  # each row carries its own face's counts and score
        assert row["layer_counts"] == [float(v) for v in counts[i]]
        assert row["p_fake"] == pytest.approx(p_fake[i], abs=1e-9)


def test_detect_boxes_the_astronaut_and_reports_no_face(weight_file, detector):
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    client = TestClient(create_app(detector=detector, aligned=False))
    r = post(client, ASTRONAUT.read_bytes(), name="astronaut.jpg", ctype="image/jpeg")
    assert r.status_code == 200, r.text
    [row] = r.json()
    assert row["face"] == 0 and row["error"] is None and 0.0 <= row["p_fake"] <= 1.0
    assert row["label"] == ("fake" if row["p_fake"] >= 0.5 else "real")
    x0, y0, x1, y1 = row["box"]
    assert 150 < (x0 + x1) / 2 < 280 and 60 < (y0 + y1) / 2 < 200  # her face, upper middle
    neurons = client.get("/api/model").json()["neurons"]
    assert all(0 <= c <= n for c, n in zip(row["layer_counts"], neurons, strict=False))

    assert row["detection_score"] > 0.9 and row["face_size"] > 60
    # the tiny model learnt noise faces: a real photo is rightly unlike them, nothing else
    assert row["warning"].startswith("unlike the faces") and row["novelty"] > 0

    grey = png_bytes(Image.new("RGB", (200, 200), (128, 128, 128)))
    [none] = post(client, grey, name="grey.png").json()
    assert none == {
        **dict.fromkeys(FIELDS),
        "path": "grey.png",
        "error": "no face found",
        **dict.fromkeys(app_module.WEB_ROW_FIELDS),
    }


def test_upload_limits_answer_with_clear_4xx(detector):
    client = TestClient(
        create_app(detector=detector, aligned=True, max_bytes=20_000, max_pixels=150 * 150)
    )
    noisy = png_bytes(noise_face(1, smooth=False, size=96))  # ~28 kB of incompressible noise
    r = post(client, noisy)
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert r.json()["detail"].endswith("start the server with --max-bytes to raise it)")
    r = post(client, png_bytes(noise_face(1, smooth=False, size=300)))  # refused before reading
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert "start the server with --max-bytes to raise it" in r.json()["detail"]
    r = post(client, png_bytes(Image.new("RGB", (200, 200))))  # small file, too many pixels
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    assert "start the server with --max-pixels to raise it" in r.json()["detail"]
    r = post(client, b"just some text", name="notes.txt", ctype="text/plain")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    r = post(client, b"just some text", name="fake.png")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    small = png_bytes(noise_face(2, smooth=True, size=64))
    r = post(client, small[: len(small) // 2])
    assert r.status_code == 422 and "truncated" in r.json()["detail"]
    assert post(client, b"").status_code == 422
    assert post(client, small, ctype="application/octet-stream").status_code == 200
    r = client.post("/api/detect")  # no file at all
    assert r.status_code == 422 and r.json() == {"detail": "missing form field 'image'"}
    r = client.post("/api/detect", files={"photo": ("face.png", small, "image/png")})
    assert r.status_code == 422 and r.json() == {"detail": "missing form field 'image'"}


def test_concurrent_requests_give_the_same_answers(aligned_client):
    images = [png_bytes(noise_face(20 + i, smooth=bool(i % 2))) for i in range(4)]
    expected = [post(aligned_client, data).json() for data in images]

    def ask(i: int):
        with TestClient(aligned_client.app) as client:
            return post(client, images[i % 4]).json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, range(12)))
    for i, answer in enumerate(answers):
        assert answer == expected[i % 4]
    assert {e[0]["label"] for e in expected} == {"real", "fake"}


def test_serve_command_refuses_a_bad_model_in_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    result = CliRunner().invoke(serve_command, ["--model", str(bad), "--port", "0"])
    assert result.exit_code == 1 and "Error:" in result.output
    assert "Traceback" not in result.output
    assert "--aligned" in CliRunner().invoke(serve_command, ["--help"]).output


# ---- videos ----


@pytest.fixture
def pan_video(tmp_path) -> Path:
    """test_video's clip: 2 s at 10 fps of the astronaut photo seen through a sliding window."""
    pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
    from test_video import write_panning_video

    path = tmp_path / "pan.mp4"
    write_panning_video(path)
    return path


def post_video(
    client: TestClient,
    data: bytes,
    name: str = "pan.mp4",
    ctype: str = "video/mp4",
    fps: str | None = None,
):
    form = {} if fps is None else {"fps": fps}
    return client.post("/api/detect-video", files={"video": (name, data, ctype)}, data=form)


def test_detect_video_follows_her_face_like_scan_video(
    weight_file, detector, pan_video, tmp_path, monkeypatch
):
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    from fakespotter.video import scan_video

    app = create_app(detector=detector, aligned=False)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    r = post_video(TestClient(app), pan_video.read_bytes(), fps="2")
    assert r.status_code == 200, r.text
    assert list(uploads.iterdir()) == []  # the temporary copy is gone
    answer = r.json()
    assert answer["path"] == "pan.mp4" and answer["fps"] == 2.0
    assert answer["n_frames"] == 4 and answer["times"] == pytest.approx([0, 0.5, 1, 1.5])
    assert answer["max_frames"] == 120 and answer["truncated"] is False
    assert answer["duration"] == pytest.approx(2.0, abs=0.15)
    [track] = answer["tracks"]
    assert track["n_frames"] == 4 and track["times"] == answer["times"]
    assert len(track["p_fake"]) == len(track["boxes"]) == 4
    assert all(0 <= p <= 1 for p in track["p_fake"])
    assert track["mean"] == pytest.approx(np.mean(track["p_fake"]))
    assert track["max"] == max(track["p_fake"]) and track["label"] in ("real", "fake")
    centres = [(b[0] + b[2]) / 2 for b in track["boxes"]]
    assert centres[-1] < centres[0] - 20  # the window slides right: her face moves left
    video = answer["video"]
    assert video["n_faces"] == 4 and video["n_tracks"] == 1 and video["n_frames_with_faces"] == 4
    assert video["label"] == track["label"]
    assert video["fraction_fake"] == track["fraction_fake"]

    # the same numbers as the command line's scanner on the same file
    expected = scan_video(pan_video, detector, app.state.scorer.cropper, fps=2)
    assert track["p_fake"] == pytest.approx(expected["tracks"][0]["p_fake"], abs=1e-9)
    assert track["boxes"] == expected["tracks"][0]["boxes"]


def test_detect_video_scores_at_most_max_frames_under_the_lock(detector, pan_video, monkeypatch):
    client = TestClient(create_app(detector=detector, aligned=True, max_video_frames=3))
    scorer = client.app.state.scorer
    held = []
    crop_faces = scorer.cropper.__call__

    class LockCheckingCropper:  # the torch work of a video takes the photos' lock
        aligned = True

        def __call__(self, image):
            held.append(scorer._lock.locked())
            return crop_faces(image)

    monkeypatch.setattr(scorer, "cropper", LockCheckingCropper())
    # whichever of the detector's scoring calls the video scan makes, it is under the lock
    for method in ("assess", "predict_proba_and_embed", "predict_proba"):
        original = getattr(detector, method)

        def checked(*args, _original=original, **kwargs):
            held.append(scorer._lock.locked())
            return _original(*args, **kwargs)

        monkeypatch.setattr(detector, method, checked)
    r = post_video(client, pan_video.read_bytes(), fps="2")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["n_frames"] == 3 and answer["truncated"] is True and answer["max_frames"] == 3
    assert answer["tracking"] == "identity"  # faces linked by their embeddings
    # aligned: every frame is one face, so one track spanning the three frames
    assert [t["n_frames"] for t in answer["tracks"]] == [3]
    # three face searches and one scoring batch (its calls may nest), all under the lock
    assert len(held) >= 4 and all(held), held
    assert not scorer._lock.locked()


def test_video_upload_limits_answer_with_clear_4xx(detector, pan_video):
    data = pan_video.read_bytes()
    client = TestClient(create_app(detector=detector, aligned=True, max_video_bytes=len(data) - 1))
    r = post_video(client, data)  # within the multipart slack: counted while copying
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert "start the server with --max-video-bytes to raise it" in r.json()["detail"]
    small = TestClient(create_app(detector=detector, aligned=True, max_video_bytes=1000))
    r = post_video(small, data)  # refused on its Content-Length
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert "start the server with --max-video-bytes to raise it" in r.json()["detail"]

    client = TestClient(create_app(detector=detector, aligned=True))
    r = post_video(client, b"just some text", name="notes.txt", ctype="text/plain")
    assert r.status_code == 415 and "not a video" in r.json()["detail"]
    r = post_video(
        client, png_bytes(noise_face(1, smooth=False)), name="face.png", ctype="image/png"
    )
    assert r.status_code == 415 and "not a video" in r.json()["detail"]
    r = post_video(client, b"\x00garbage" * 100, name="notes.bin", ctype="application/octet-stream")
    assert r.status_code == 415 and "not a video" in r.json()["detail"]
    r = post_video(client, b"\x00garbage" * 100, name="clip.mp4")
    detail = r.json()["detail"]
    assert r.status_code == 422 and detail.startswith("cannot open video clip.mp4")
    assert "fakespotter-upload" not in detail and "Errno" not in detail
    assert post_video(client, b"", name="clip.mp4").status_code == 422
    for fps in ("0", "-1", "2.5", "nan", "often"):
        r = post_video(client, data, fps=fps)
        assert r.status_code == 422, fps
    detail = post_video(client, data, fps="5").json()["detail"]
    assert "at most 2" in detail and "start the server with --max-video-fps" in detail
    assert "--max-video-fps" not in post_video(client, data, fps="0").json()["detail"]
    assert post_video(client, data, fps="often").json() == {
        "detail": "form field 'fps': input should be a valid number, unable to parse string as "
        "a number"
    }
    r = post_video(client, data, ctype="application/octet-stream", fps="0.5")
    assert r.status_code == 200 and r.json()["n_frames"] == 1
    r = client.post("/api/detect-video")  # no file at all
    assert r.status_code == 422 and r.json() == {"detail": "missing form field 'video'"}
    # a photo still has the photo limit, not the video one
    photos = TestClient(create_app(detector=detector, aligned=True, max_bytes=20_000))
    assert post(photos, png_bytes(noise_face(1, smooth=False, size=300))).status_code == 413


def test_video_summary_keeps_the_fake_ranges(detector, pan_video, monkeypatch):
    import fakespotter.video

    scan_video = fakespotter.video.scan_video

    def with_ranges(*args, **kwargs):
        result = scan_video(*args, **kwargs)
        result["video"]["fake_ranges"] = [[0.0, 0.5], [1.0, 1.5]]
        return result

    client = TestClient(create_app(detector=detector, aligned=True))
    monkeypatch.setattr(fakespotter.video, "scan_video", with_ranges)
    r = post_video(client, pan_video.read_bytes(), fps="2")
    assert r.status_code == 200, r.text
    assert r.json()["video"]["fake_ranges"] == [[0.0, 0.5], [1.0, 1.5]]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["VideoSummary"]
    assert "fake_ranges" in schema["properties"]


# ---- health, error bodies, OpenAPI, offline docs ----


def test_health_names_the_model(detector, model_file):
    from fakespotter.modelfile import model_id

    client = TestClient(create_app(model_file, aligned=True, detector=detector))
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": model_id(model_file), "backbone": "dlib"}
    assert TestClient(create_app(detector=detector, aligned=True)).get("/health").json() == {
        "status": "ok",
        "model": None,
        "backbone": "dlib",
    }


def one_line_problem(r) -> str:
    """The body every error has: {"detail": "<one line>"}."""
    assert r.headers["content-type"] == "application/json", r.text
    body = r.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str), body
    assert body["detail"] and "\n" not in body["detail"], body
    return body["detail"]


def test_every_error_answers_one_line_of_detail(detector, monkeypatch):
    client = TestClient(
        create_app(detector=detector, aligned=True, max_bytes=1000), raise_server_exceptions=False
    )
    face = png_bytes(noise_face(1, smooth=False))
    assert one_line_problem(r := client.get("/nowhere")) == "Not Found" and r.status_code == 404
    r = client.get("/api/detect")
    assert r.status_code == 405 and one_line_problem(r) == "Method Not Allowed"
    assert "POST" in r.headers["allow"]
    r = post(client, face)  # the middleware's 413, before FastAPI reads the body
    assert r.status_code == 413 and "--max-bytes" in one_line_problem(r)
    r = client.post("/api/detect")  # FastAPI's own validation error, as one line
    assert r.status_code == 422 and one_line_problem(r) == "missing form field 'image'"
    r = post(client, b"text", name="notes.txt", ctype="text/plain")  # an HTTPException
    assert r.status_code == 415 and one_line_problem(r).startswith("not an image")
    r = client.post(
        "/api/detect",
        content=b"--x\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert 400 <= r.status_code < 500 and one_line_problem(r)

    def broken(faces, name):
        raise RuntimeError("something deep\nwith a second line")

    small = TestClient(create_app(detector=detector, aligned=True), raise_server_exceptions=False)
    monkeypatch.setattr(small.app.state.scorer, "score_faces", broken)
    r = post(small, face)
    assert r.status_code == 500
    assert one_line_problem(r) == "internal server error (RuntimeError); see the server's log"


def test_openapi_names_the_upload_fields_and_the_error_body(aligned_client):
    spec = aligned_client.get("/openapi.json").json()
    photo, video = spec["paths"]["/api/detect"]["post"], spec["paths"]["/api/detect-video"]["post"]
    assert "multipart form field `image`" in photo["description"]
    assert "multipart form field `video`" in video["description"]
    assert "`fps`" in video["description"]
    for op in (photo, video):
        for status in ("413", "415", "422"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (status, schema)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's list-shaped 422 is not used
    assert "one line" in schemas["Problem"]["description"]
    assert set(schemas["FaceRow"]["properties"]) == DETECT_FIELDS | set(app_module.WEB_ROW_FIELDS)
    assert {"layer_counts", "layer_decision"} <= set(app_module.WEB_ROW_FIELDS)
    assert schemas["FaceRow"]["properties"]["label"]["anyOf"][0]["enum"] == [
        "real",
        "fake",
        "uncertain",
    ]
    assert "get" in spec["paths"]["/health"]
    assert "/docs" not in spec["paths"] and "/docs-static" not in json.dumps(spec["paths"])


def test_docs_pages_load_without_the_internet(aligned_client):
    for page in ("/docs", "/redoc"):
        r = aligned_client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert not re.search(r"(https?:)?//[a-z]", r.text, re.IGNORECASE), page
        assets = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", r.text)
        assert any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            assert asset.startswith("/"), asset
            got = aligned_client.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
        assert "img-src 'self' data:" in r.headers["content-security-policy"]
        if page == "/docs":
            assert "/docs-static/swagger-ui-bundle.js" in assets
            assert "/docs-static/swagger-ui.css" in assets


def test_docs_say_so_in_one_line_when_their_package_is_missing(detector, monkeypatch):
    monkeypatch.setattr(app_module, "_docs_assets", lambda: None)
    client = TestClient(create_app(detector=detector, aligned=True))
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 501 and "fastapi-offline" in one_line_problem(r)
        assert "cdn" not in r.text.lower()
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 404


# ---- hostile uploads, slow photos, time limits (issue #27) ----


def multipart(field: str, filename: bytes, data: bytes, ctype: str) -> dict:
    """A raw multipart body, for file names no HTTP client library sends as they are."""
    body = (
        b"--xyz\r\nContent-Disposition: form-data; name=\"" + field.encode() + b"\"; filename=\""
        + filename + b"\"\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + data
        + b"\r\n--xyz--\r\n"
    )  # fmt: skip
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=xyz"}}


def test_one_pixel_wide_photos_get_a_row_not_a_500(weight_file, detector, model_file, tmp_path):
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    client = TestClient(create_app(detector=detector), raise_server_exceptions=False)
    # 1 x 1 made a 500 (negative strides); a thin strip took seconds, or would have grown
    # to billions of pixels in the face search
    for width, height in ((1, 1), (1, 500), (500, 1), (16, 4000)):
        path = tmp_path / f"{width}x{height}.png"
        Image.new("RGB", (width, height), (200, 150, 120)).save(path)
        r = post(client, path.read_bytes(), name=path.name)
        assert r.status_code == 200, (path.name, r.text)
        [row] = r.json()
        assert row["path"] == path.name and row["error"] == "no face found", row
    # the command line's rows say the same (no "At least one stride ... negative")
    paths = sorted(str(p) for p in tmp_path.glob("*.png"))
    cli = CliRunner().invoke(
        main, ["detect", *paths, "--model", str(model_file), "--format", "json"]
    )
    assert "stride" not in cli.output and "Traceback" not in cli.output, cli.output
    rows = json.loads(cli.stdout)
    assert [r["error"] for r in rows] == ["no face found"] * 4, rows


def test_nul_byte_in_a_photos_name_is_no_500(aligned_client):
    face = png_bytes(noise_face(4, smooth=True))
    r = aligned_client.post("/api/detect", **multipart("image", b"a.j\x00pg", face, "image/png"))
    assert r.status_code == 200, r.text
    [row] = r.json()
    assert row["path"] == "a.j?pg" and row["p_fake"] is not None  # shown, never a file name
    r = aligned_client.post("/api/detect", **multipart("image", b"\x00", face, "image/png"))
    assert r.status_code == 200 and r.json()[0]["path"] == "?"


def test_nul_byte_in_a_videos_name_is_no_500(aligned_client, pan_video, tmp_path, monkeypatch):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    data = pan_video.read_bytes()
    r = aligned_client.post(
        "/api/detect-video", **multipart("video", b"a.m\x00p4", data, "video/mp4")
    )
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "a.m?p4" and r.json()["n_frames"] == 2
    r = aligned_client.post(
        "/api/detect-video", **multipart("video", b"b.m\x00p4", b"\x00garbage" * 50, "video/mp4")
    )
    assert r.status_code == 422 and one_line_problem(r).startswith("cannot open video b.m?p4")
    assert list(uploads.iterdir()) == []


def test_api_row_schema_is_the_command_lines_row():
    import dataclasses
    import typing

    from fakespotter.rows import Row, label_for
    from fakespotter.video import track_label

    schema = app_module.FaceRow.model_fields
    row_types = typing.get_type_hints(Row)
    assert [f.name for f in dataclasses.fields(Row)] == [n for n in schema if n in row_types]
    assert set(schema) - set(row_types) == set(app_module.WEB_ROW_FIELDS)  # the web's own
    for name, field in schema.items():
        if name in row_types and name != "label":
            assert field.annotation == row_types[name], name
    labels = set(typing.get_args(app_module.Label))
    assert schema["label"].annotation == app_module.Label | None
    video_label = app_module.VideoTrack.model_fields["label"].annotation
    assert video_label == app_module.Label
    assert app_module.VideoSummary.model_fields["label"].annotation == app_module.Label | None
    # every label the rules give is one the API declares
    band = (0.3, 0.7)
    for p in np.linspace(0, 1, 21):
        assert label_for(float(p), band[1], band[0]) in labels
        assert track_label(np.array([p, p]), OperatingPoint(band[1], band[0])) in labels
    assert {label_for(p, *band[::-1]) for p in (0.1, 0.5, 0.9)} == labels


def test_video_track_inside_the_models_band_says_uncertain(detector, pan_video, monkeypatch):
    # every score inside the band: P(fake) < 1.0 everywhere, the band [0, 1)
    monkeypatch.setattr(detector, "operating_point_", OperatingPoint(1.0, 0.0))
    client = TestClient(create_app(detector=detector, aligned=True), raise_server_exceptions=False)
    r = post_video(client, pan_video.read_bytes(), fps="2")
    assert r.status_code == 200, r.text
    [track] = r.json()["tracks"]
    assert track["label"] == "uncertain"
    assert r.json()["video"]["label"] in ("real", "uncertain")


def test_a_video_sent_as_a_photo_points_to_the_video_endpoint(aligned_client):
    mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 200
    for name, ctype in (("clip.mp4", "video/mp4"), ("clip.mp4", "application/octet-stream"),
                        ("upload", "application/octet-stream")):  # fmt: skip
        r = post(aligned_client, mp4, name=name, ctype=ctype)
        assert r.status_code == 415, (name, ctype, r.text)
        detail = one_line_problem(r)
        assert detail.startswith("a video, not a photo") and "/api/detect-video" in detail
    r = post_video(aligned_client, png_bytes(noise_face(1, smooth=False)), "f.png", "image/png")
    assert r.status_code == 415 and "/api/detect" in one_line_problem(r)


def test_a_slow_photo_holds_up_no_other(detector, monkeypatch):
    import threading

    from fakespotter.serve import analysis

    app = create_app(detector=detector, aligned=True)
    scorer = app.state.scorer
    crop = scorer.cropper
    # a 200 x 200 photo counts as large; its face search waits until released
    monkeypatch.setattr(analysis, "LARGE_PHOTO_PIXELS", 150 * 150, raising=False)
    searching, release = threading.Event(), threading.Event()

    def slow_when_large(image):
        if image.shape[0] * image.shape[1] > 150 * 150:
            searching.set()
            release.wait(20)
        return crop(image)

    monkeypatch.setattr(scorer, "cropper", slow_when_large)
    answered = []

    def ask(name: str, data: bytes) -> None:
        r = post(TestClient(app), data, name=name)
        answered.append((name, r.status_code))

    large = threading.Thread(target=ask, args=("large.png", png_bytes(noise_face(1, False, 200))))
    large.start()
    assert searching.wait(20)
    for i in range(3):  # ordinary photos, one after another, while the large one is searched
        ask(f"small{i}.png", png_bytes(noise_face(2 + i, smooth=True)))
    release.set()
    large.join(20)
    assert answered == [("small0.png", 200), ("small1.png", 200), ("small2.png", 200),
                        ("large.png", 200)]  # fmt: skip


def test_the_torch_work_runs_on_a_fixed_few_threads_however_many_requests(detector, monkeypatch):
    """Issue #27 (12): server memory grew 100-200 MB per 200 requests. Python's heap stayed
    flat (tracemalloc); glibc kept memory per thread, and the face search and network ran on
    whichever of FastAPI's worker threads took the request, threads that come and go. The
    work now runs on the scorer's own fixed threads, so that memory is bounded by them."""
    import threading

    app = create_app(detector=detector, aligned=True)
    scorer = app.state.scorer
    crop, assess = scorer.cropper, detector.assess
    searched, scored = set(), set()

    def crop_here(image):
        searched.add(threading.get_ident())
        return crop(image)

    def assess_here(crops, **kw):
        scored.add(threading.get_ident())
        return assess(crops, **kw)

    monkeypatch.setattr(scorer, "cropper", crop_here)
    monkeypatch.setattr(detector, "assess", assess_here)
    photo = png_bytes(noise_face(3, smooth=True))

    def ask(i: int) -> int:
        return post(TestClient(app), photo, name=f"f{i}.png").status_code

    with ThreadPoolExecutor(8) as pool:  # 8 clients at once, 32 requests
        codes = list(pool.map(ask, range(32)))
    assert codes == [200] * 32
    assert len(scored) == 1  # the network's one thread
    assert 1 <= len(searched) <= 3  # two photo lanes and the large-photo lane at most
    assert threading.get_ident() not in searched | scored


@pytest.mark.slow
def test_time_limit_answers_504_or_503_in_one_line(detector, monkeypatch):
    import threading

    app = create_app(detector=detector, aligned=True, time_limit=2.0)
    scorer = app.state.scorer
    crop, release = scorer.cropper, threading.Event()

    def stuck(image):
        release.wait(20)
        return crop(image)

    monkeypatch.setattr(scorer, "cropper", stuck)
    face = png_bytes(noise_face(1, smooth=True))
    try:
        # two searches take the ordinary lane's two threads and run out of time (504); the
        # third never gets a thread (503, try again later)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda i: post(TestClient(app), face), range(3)))
    finally:
        release.set()
    assert sorted(r.status_code for r in answers) == [503, 504, 504]
    for r in answers:
        detail = one_line_problem(r)
        if r.status_code == 504:
            assert (
                detail == "the request took longer than 2 s (start the server with "
                "--time-limit to raise it)"
            )
        else:
            assert detail.startswith("server busy") and r.headers["retry-after"].isdigit()
    # the threads come free again: the next photo is scored
    monkeypatch.setattr(scorer, "cropper", crop)
    r = post(TestClient(app), face)
    assert r.status_code == 200 and r.json()[0]["p_fake"] is not None


@pytest.mark.slow
def test_a_video_past_its_time_limit_gets_504_and_its_scan_stops(
    detector, pan_video, tmp_path, monkeypatch
):
    import threading

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    app = create_app(detector=detector, aligned=True, time_limit=1.0)
    scorer = app.state.scorer
    crop, release, frames = scorer.cropper, threading.Event(), []

    class Stuck:  # the first frame's face search outlasts the request
        aligned = True

        def __call__(self, image):
            frames.append(image.shape)
            release.wait(20)
            return crop(image)

    monkeypatch.setattr(scorer, "cropper", Stuck())
    try:
        r = post_video(TestClient(app), pan_video.read_bytes(), fps="2")
    finally:
        release.set()
    scorer.video_lane.shutdown(wait=True)  # the scan under way comes to its end
    assert r.status_code == 504 and "longer than 1 s" in one_line_problem(r)
    assert len(frames) == 1  # it stopped at its next frame, of four
    assert list(uploads.iterdir()) == []  # and removed its copy of the upload


# ---- the serve command ----


def test_serve_limits_are_options_with_the_servers_defaults():
    import fakespotter.cli.serve as serve_cli

    text = CliRunner().invoke(serve_command, ["--help"], terminal_width=200).output
    text = " ".join(text.split())
    assert (
        "--max-bytes INTEGER RANGE Refuse files larger than this many bytes. "
        f"[default: {app_module.MAX_UPLOAD_BYTES}; x>=1]"
    ) in text
    assert (
        "--max-pixels INTEGER RANGE Refuse images with more pixels than this, before "
        f"decoding. [default: {app_module.MAX_UPLOAD_PIXELS}; x>=1]"
    ) in text
    for option, value in (
        ("--max-video-bytes", app_module.MAX_VIDEO_BYTES),
        ("--max-video-frames", app_module.MAX_VIDEO_FRAMES),
        ("--max-video-fps", app_module.MAX_VIDEO_FPS),
        ("--time-limit", app_module.TIME_LIMIT),
    ):
        assert re.search(rf"{option} \S+( RANGE)? .*?\[default: {value};", text), option
    for name in (
        "MAX_UPLOAD_BYTES",
        "MAX_UPLOAD_PIXELS",
        "MAX_VIDEO_BYTES",
        "MAX_VIDEO_FRAMES",
        "MAX_VIDEO_FPS",
        "TIME_LIMIT",
    ):
        assert getattr(serve_cli, name) == getattr(app_module, name), name


@pytest.fixture
def started(monkeypatch, detector):
    """Run `serve` without serving: what create_app, load_model and uvicorn.run were given."""
    import torch
    import uvicorn

    import fakespotter.persistence

    seen: dict = {}

    def load_model(path, backbone=None, device=None):
        seen["device"] = device
        return detector

    monkeypatch.setattr(fakespotter.persistence, "load_model", load_model)
    monkeypatch.setattr(
        uvicorn,
        "run",
        lambda app, **kw: seen.update(app=app, threads=torch.get_num_threads(), **kw),
    )
    threads = torch.get_num_threads()
    yield seen
    torch.set_num_threads(threads)


def test_serve_uses_the_global_device_threads_and_limits(started, model_file):
    args = [
        "--model",
        str(model_file),
        "--aligned",
        "--port",
        "0",
        "--max-bytes",
        "1000",
        "--max-pixels",
        "100",
        "--max-video-fps",
        "0.5",
        "--max-video-frames",
        "7",
        "--time-limit",
        "30",
    ]
    obj = {"device": "cpu", "threads": 1, "workers": None}  # as the group command stores them
    result = CliRunner().invoke(serve_command, args, obj=obj)
    assert result.exit_code == 0, result.output
    assert started["device"] == "cpu" and started["threads"] == 1 and started["port"] == 0
    [limit] = [m for m in started["app"].user_middleware if m.cls is app_module.TimeLimit]
    assert limit.kwargs == {"seconds": 30.0}
    client = TestClient(started["app"])
    r = post(client, png_bytes(noise_face(1, smooth=False)))
    assert r.status_code == 413 and "limit 0.0 MB" in r.json()["detail"]
    face = png_bytes(noise_face(2, smooth=True, size=12))  # 144 pixels, a small file
    r = post(client, face)
    assert r.status_code == 413 and "--max-pixels" in r.json()["detail"]
    r = client.post(
        "/api/detect-video", files={"video": ("a.mp4", b"x", "video/mp4")}, data={"fps": "1"}
    )
    assert r.status_code == 422 and "at most 0.5" in r.json()["detail"]


def test_serve_runs_on_its_own_without_global_settings(started, model_file):
    import torch

    before = torch.get_num_threads()
    result = CliRunner().invoke(serve_command, ["--model", str(model_file), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert started["device"] is None and started["threads"] == before  # load_model's default
    result = CliRunner().invoke(
        main, ["--threads", "1", "serve", "--model", str(model_file), "--port", "0"]
    )
    assert result.exit_code == 0, result.output
    assert started["threads"] == 1


# ---- in a browser (skipped without Debian's chromium and playwright) ----

SHOTS = os.environ.get("FAKESPOTTER_SERVE_SHOTS")  # a folder for screenshots to look at


@pytest.fixture
def browser_page(detector):
    """A headless Chromium page, and the aligned app served by uvicorn on 127.0.0.1: the
    page may reach nothing else (what it tried is in `outside`, its errors in `problems`)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    outside, problems = [], []
    with (
        serving(create_app(detector=detector, aligned=True)) as url,
        sync_api.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})

            def only_local(route):
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            yield url, page, outside, problems
        finally:
            browser.close()


@pytest.mark.slow
def test_page_flags_a_face_with_a_warning(browser_page, tmp_path):
    url, page, outside, problems = browser_page
    path = tmp_path / "noise.png"
    noise_face(3, smooth=False).save(path)  # aligned noise: "does not look like a face"
    page.goto(url + "/")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#overlay rect.face-box", timeout=60_000)
    assert page.locator("#overlay rect.face-box.flagged").count() == 1
    assert page.locator("#overlay .flag-mark").count() == 1
    card = page.text_content("#faces li.flagged")
    assert "flagged: does not look like a face" in card
    assert page.is_visible("#verdict-warning")
    assert "does not look like a face" in page.text_content("#verdict-warning")
    assert page.text_content("#status") == (
        "1 face found, 1 flagged (outside what the detector was measured on: less certain)."
    )
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/flagged.png", full_page=True)
    assert outside == [] and problems == []


@pytest.mark.slow
def test_docs_page_renders_in_a_browser_without_the_internet(browser_page):
    url, page, outside, problems = browser_page
    page.goto(url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert "/api/detect" in paths and "/health" in paths
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/docs.png", full_page=True)
    page.goto(url + "/redoc")
    page.wait_for_selector("h1:has-text('fakespotter')", timeout=30_000)
    page.wait_for_selector("h2:has-text('Detect Video')")
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/redoc.png")
    # ReDoc's sidebar logo is on its CDN: the page's policy stops the browser asking for it
    blocked = [p for p in problems if "violates the following Content Security Policy" in p]
    assert all("cdn.redoc.ly" in p for p in blocked)
    assert outside == [] and [p for p in problems if p not in blocked] == []


def test_api_and_page_say_uncertain_inside_the_models_band(
    browser_page, detector, monkeypatch, tmp_path
):
    # every score inside the band: P(fake) < 1.0 everywhere, the band [0, 1)
    monkeypatch.setattr(detector, "operating_point_", OperatingPoint(1.0, 0.0))
    url, page, outside, problems = browser_page
    path = tmp_path / "face.png"
    noise_face(5, smooth=True).save(path)
    page.goto(url + "/")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#overlay rect.face-box", timeout=60_000)
    assert page.locator("#overlay rect.face-box.uncertain").count() == 1
    # the noise face is also flagged (not face-like), so the headline says "can't tell"
    # first; its card still gives the band's label, numbered from 0 as in the JSON
    assert page.text_content("#verdict").startswith("Face 0: Can't tell")
    assert page.text_content("#faces li").startswith("Face 0: uncertain")
    assert outside == [] and problems == []

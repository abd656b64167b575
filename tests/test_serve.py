"""The web service: page, OpenAPI, scoring uploads (photos and videos), upload limits,
concurrent requests."""

from __future__ import annotations

import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi) is not installed")
pytest.importorskip("multipart", reason="the 'serve' extra (python-multipart) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from fakespotter.cli import main  # noqa: E402
from fakespotter.serve.app import create_app  # noqa: E402
from fakespotter.serve.cli import serve_command  # noqa: E402

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"
DETECT_FIELDS = {"path", "face", "box", "p_fake", "label", "error"}
_shared: dict = {}  # one trained model and loaded detector for the whole file


def noise_face(seed: int, smooth: bool, size: int = 96) -> Image.Image:
    """Noise 'faces' as in test_cli: blurred ones are the 'fake' class."""
    im = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
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
        from fakespotter.detector import load_model

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
    assert all(0 <= m <= n for m, n in zip(info["training_mean"], info["neurons"]))
    # `train` stores the class averages the page draws a face against
    assert len(info["real_mean"]) == len(info["fake_mean"]) == len(detector.taps_)


def test_detect_matches_the_command_line(aligned_client, model_file, tmp_path):
    path = tmp_path / "blurred.png"
    noise_face(7, smooth=True).save(path)
    r = post(aligned_client, path.read_bytes(), name="blurred.png")
    assert r.status_code == 200, r.text
    [row] = r.json()
    cli = CliRunner().invoke(main, ["detect", str(path), "--model", str(model_file), "--aligned",
                                    "--format", "json"])
    [expected] = json.loads(cli.stdout)
    assert set(row) == DETECT_FIELDS | {"layer_counts"}
    assert row["path"] == "blurred.png" and row["label"] == expected["label"] == "fake"
    assert row["box"] == expected["box"] == [0.0, 0.0, 96.0, 96.0]
    assert row["p_fake"] == pytest.approx(expected["p_fake"], abs=1e-9)
    assert len(row["layer_counts"]) == 30 and all(c >= 0 for c in row["layer_counts"])


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
    assert all(0 <= c <= n for c, n in zip(row["layer_counts"], neurons))

    grey = png_bytes(Image.new("RGB", (200, 200), (128, 128, 128)))
    [none] = post(client, grey, name="grey.png").json()
    assert none == {"path": "grey.png", "face": None, "box": None, "p_fake": None, "label": None,
                    "error": "no face found", "layer_counts": None}


def test_upload_limits_answer_with_clear_4xx(detector):
    client = TestClient(create_app(detector=detector, aligned=True, max_bytes=20_000,
                                   max_pixels=150 * 150))
    noisy = png_bytes(noise_face(1, smooth=False, size=96))  # ~28 kB of incompressible noise
    r = post(client, noisy)
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = post(client, png_bytes(noise_face(1, smooth=False, size=300)))  # refused before reading
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = post(client, png_bytes(Image.new("RGB", (200, 200))))  # small file, too many pixels
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = post(client, b"just some text", name="notes.txt", ctype="text/plain")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    r = post(client, b"just some text", name="fake.png")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    small = png_bytes(noise_face(2, smooth=True, size=64))
    r = post(client, small[: len(small) // 2])
    assert r.status_code == 422 and "truncated" in r.json()["detail"]
    assert post(client, b"").status_code == 422
    assert post(client, small, ctype="application/octet-stream").status_code == 200
    assert client.post("/api/detect").status_code == 422  # no file at all


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


def post_video(client: TestClient, data: bytes, name: str = "pan.mp4", ctype: str = "video/mp4",
               fps: str | None = None):
    form = {} if fps is None else {"fps": fps}
    return client.post("/api/detect-video", files={"video": (name, data, ctype)}, data=form)


def test_detect_video_follows_her_face_like_scan_video(weight_file, detector, pan_video,
                                                       tmp_path, monkeypatch):
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
    crop_faces, predict_proba = scorer.cropper.__call__, detector.predict_proba

    class LockCheckingCropper:  # the torch work of a video takes the photos' lock
        aligned = True

        def __call__(self, image):
            held.append(scorer._lock.locked())
            return crop_faces(image)

    def checked_predict_proba(crops):
        held.append(scorer._lock.locked())
        return predict_proba(crops)

    monkeypatch.setattr(scorer, "cropper", LockCheckingCropper())
    monkeypatch.setattr(detector, "predict_proba", checked_predict_proba)
    r = post_video(client, pan_video.read_bytes(), fps="2")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["n_frames"] == 3 and answer["truncated"] is True and answer["max_frames"] == 3
    # aligned: every frame is one face, so one track spanning the three frames
    assert [t["n_frames"] for t in answer["tracks"]] == [3]
    assert held == [True] * 4  # three face searches, one scoring batch
    assert not scorer._lock.locked()


def test_video_upload_limits_answer_with_clear_4xx(detector, pan_video):
    data = pan_video.read_bytes()
    client = TestClient(create_app(detector=detector, aligned=True, max_video_bytes=len(data) - 1))
    r = post_video(client, data)  # within the multipart slack: counted while copying
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    small = TestClient(create_app(detector=detector, aligned=True, max_video_bytes=1000))
    r = post_video(small, data)  # refused on its Content-Length
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    client = TestClient(create_app(detector=detector, aligned=True))
    r = post_video(client, b"just some text", name="notes.txt", ctype="text/plain")
    assert r.status_code == 415 and "not a video" in r.json()["detail"]
    r = post_video(client, png_bytes(noise_face(1, smooth=False)), name="face.png",
                   ctype="image/png")
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
    assert "at most 2" in post_video(client, data, fps="5").json()["detail"]
    r = post_video(client, data, ctype="application/octet-stream", fps="0.5")
    assert r.status_code == 200 and r.json()["n_frames"] == 1
    assert client.post("/api/detect-video").status_code == 422  # no file at all
    # a photo still has the photo limit, not the video one
    photos = TestClient(create_app(detector=detector, aligned=True, max_bytes=20_000))
    assert post(photos, png_bytes(noise_face(1, smooth=False, size=300))).status_code == 413

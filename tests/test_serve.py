"""The web service: page, OpenAPI, scoring uploads, upload limits, concurrent requests."""

from __future__ import annotations

import io
import json
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
def model_file(weight_file, tmp_path_factory) -> Path:
    weight_file("dlib")
    if "model" not in _shared:
        root = tmp_path_factory.mktemp("serve-model")
        for label, smooth, seed in (("real", False, 1), ("fake", True, 2)):
            (root / label).mkdir()
            for i in range(12):
                noise_face(seed * 100 + i, smooth).save(root / label / f"{i:03d}.png")
        model = root / "model.safetensors"
        result = CliRunner().invoke(main, ["train", "--real", str(root / "real"), "--fake",
                                           str(root / "fake"), "--backbone", "dlib", "--variant",
                                           "layer", "--aligned", "--output", str(model)])
        assert result.exit_code == 0, result.output
        _shared["model"] = model
    return _shared["model"]


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
    script = aligned_client.get("/static/app.js")
    assert script.status_code == 200 and "/api/detect" in script.text
    assert aligned_client.get("/static/style.css").status_code == 200
    for text in (page.text, script.text):
        assert "https://" not in text and "cdn" not in text.lower()


def test_openapi_and_model_info(aligned_client, detector):
    spec = aligned_client.get("/openapi.json").json()
    assert "post" in spec["paths"]["/api/detect"] and "get" in spec["paths"]["/api/model"]
    assert {"413", "415", "422"} <= set(spec["paths"]["/api/detect"]["post"]["responses"])
    info = aligned_client.get("/api/model").json()
    assert info["backbone"] == "dlib" and info["variant"] == "layer" and info["aligned"] is True
    assert info["layers"] == list(detector.taps_)
    assert len(info["neurons"]) == len(info["training_mean"]) == len(detector.taps_)
    assert all(0 <= m <= n for m, n in zip(info["training_mean"], info["neurons"]))
    assert info["real_mean"] is None  # models made by `train` do not store class averages yet


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

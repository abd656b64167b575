"""Shared fixtures. Tests never download: real weights are used only when already cached
(``fakespotter weights fetch NAME`` fills the cache) and are skipped with a reason otherwise."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

# In parallel (pytest-xdist, the README's test command), each worker process gets its share of
# the cores for torch's threads, set before torch is imported: workers that each spin up a
# thread per core would fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

import pytest

from fakespotter import weights

FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _weight_files() -> dict[str, weights.WeightFile]:
    from fakespotter.backbones import BACKBONES
    from fakespotter.faces.registry import FACE_DETECTORS

    found = {name: spec.weights for name, spec in BACKBONES.items()}
    for name, spec in FACE_DETECTORS.items():  # "yunet"; MTCNN's three as "mtcnn_pnet", ...
        if len(spec.weight_files) == 1:
            found[name] = spec.weight_files[0]
        else:
            found.update({f"{name}_{Path(w.filename).stem}": w for w in spec.weight_files})
    return found


@pytest.fixture(scope="session")
def weight_file():
    """weight_file(name) -> Path of the verified cached file, or skip with a reason."""

    def get(name: str) -> Path:
        weight = _weight_files()[name]
        if not weights.is_cached(weight):
            path = weights.cached_file(weight)
            # a file placed by hand is accepted once its sha256 checks out
            if not (path.exists() and weights.sha256_of(path) == weight.sha256):
                pytest.skip(f"{name} weights not cached; run `fakespotter weights fetch` first")
        return weights.cached_file(weight)

    return get


@pytest.fixture
def faces_dir() -> Path:
    """The developer face set ../shared/faces, or skip when this machine has none."""
    if not (FACES_DIR / "train").is_dir():
        pytest.skip(f"real face data not found at {FACES_DIR} (only on developer machines)")
    return FACES_DIR


def write_noise_faces(folder: Path, n: int, smooth: bool, seed: int, size: int = 96) -> Path:
    """Noise 'faces': the 'fake' ones are blurred, a difference any backbone can count."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        if smooth:
            im = im.resize((size // 4, size // 4)).resize((size, size), Image.Resampling.BICUBIC)
        im.save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small dlib `layer` model trained once per session through `fakespotter train
    --aligned` on noise faces (real: noise, fake: blurred noise)."""
    from fakespotter.backbones import BACKBONES

    if not weights.is_cached(BACKBONES["dlib"].weights):
        pytest.skip("dlib weights not cached; run `fakespotter weights fetch` first")
    root = tmp_path_factory.mktemp("tiny_model")
    write_noise_faces(root / "real", 12, smooth=False, seed=1)
    write_noise_faces(root / "fake", 12, smooth=True, seed=2)
    model = root / "model.safetensors"
    result = train_cli("--real", root / "real", "--fake", root / "fake", output=model)
    assert "cross-validated AUC" in result.output
    return model


def train_cli(*args, output, backbone: str = "dlib", variant: str = "layer", aligned: bool = True):
    """`fakespotter train ARGS --backbone B --variant V [--aligned] --output O`, which must
    succeed: click's result (stdout, stderr). The tests' models are tiny: dlib's network on
    aligned noise crops unless they say otherwise."""
    from click.testing import CliRunner

    from fakespotter.cli import main

    command = ["train", *map(str, args), "--backbone", backbone, "--variant", variant]
    command += [*(["--aligned"] if aligned else []), "--output", str(output)]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def trained(tiny_model) -> Path:
    """The session's tiny model (test_hostile, test_results; test_cli has its own `trained`)."""
    return tiny_model


def write_faces(folder: Path, n: int, smooth: bool, seed: int) -> list[Path]:
    """Noise 'faces' (as in test_cli): the 'fake' ones are blurred."""
    from hostile import face_like
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = face_like(96, seed * 1000 + i)
        if smooth:
            im = im.resize((24, 24)).resize((96, 96), Image.Resampling.BICUBIC)
        paths.append(folder / f"{i:03d}.png")
        im.save(paths[-1])
    return paths


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return list(csv.DictReader(f))


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """A fuzzed copy of ``data``: bytes overwritten at ``edits``, then cut at ``cut``."""
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut else buf)


def byte_edits():
    """The hypothesis strategy of ``edits`` for :func:`mutate`."""
    from hypothesis import strategies as st

    return st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12)


@contextlib.contextmanager
def serving(app, **config):
    """``app`` served by a real uvicorn on a free port of 127.0.0.1, in a thread: its URL.
    ``config``: more of uvicorn.Config's options."""
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn", reason="the 'serve' extra (uvicorn) is not installed")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- markers (registered in pyproject.toml; `slow` is put on each slow test itself) ----------


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("ray"):  # one Ray cluster at a time: one worker runs them
            item.add_marker(pytest.mark.xdist_group("ray"))
        # `real_data`: needs ../shared/faces, i.e. uses `faces_dir` directly or via a fixture
        if "faces_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)

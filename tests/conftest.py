"""Shared fixtures. Tests never download: real weights are used only when already cached
(``fakespotter weights fetch NAME`` fills the cache) and are skipped with a reason otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakespotter import weights

FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _weight_files() -> dict[str, weights.WeightFile]:
    from fakespotter.backbones import BACKBONES
    from fakespotter.faces.pipeline import DETECTOR_WEIGHTS

    found = {name: spec.weights for name, spec in BACKBONES.items()}
    found.update({f"mtcnn_{Path(w.filename).stem}": w for w in DETECTOR_WEIGHTS})
    return found


@pytest.fixture
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
    from click.testing import CliRunner

    from fakespotter.backbones import BACKBONES
    from fakespotter.cli import main

    if not weights.is_cached(BACKBONES["dlib"].weights):
        pytest.skip("dlib weights not cached; run `fakespotter weights fetch` first")
    root = tmp_path_factory.mktemp("tiny_model")
    write_noise_faces(root / "real", 12, smooth=False, seed=1)
    write_noise_faces(root / "fake", 12, smooth=True, seed=2)
    model = root / "model.safetensors"
    result = CliRunner().invoke(main, ["train", "--real", str(root / "real"), "--fake",
                                       str(root / "fake"), "--backbone", "dlib", "--variant",
                                       "layer", "--aligned", "--output", str(model)])
    assert result.exit_code == 0, result.output
    assert "cross-validated AUC" in result.output
    return model

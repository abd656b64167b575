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

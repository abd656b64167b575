"""Issue #28: the shipped model can be taught from a plain install. `fakespotter update --fake
new=DIR --output m2.safetensors` finds the update kit the package ships beside the default
model (no --model, no --features), and `detect --model m2.safetensors` uses the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageOps

from fakespotter.cli import main
from fakespotter.persistence import default_model_path, load_model
from fakespotter.updatekit import kit_path_for, load_kit

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"


@pytest.fixture
def shipped_weights(weight_file):
    for name in ("sface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)


def _new_generator(folder: Path, n: int = 6) -> Path:
    """``n`` photos of one face, each shifted, mirrored or toned differently: a stand-in for
    a small folder of a new generator's faces (every one has a face MTCNN finds)."""
    folder.mkdir()
    photo = Image.open(ASTRONAUT).convert("RGB")
    for i in range(n):
        x = photo.crop((10 * i, 5 * i, 400 + 10 * i, 420 + 5 * i))
        x = ImageOps.mirror(x) if i % 2 else x
        x = ImageEnhance.Color(x).enhance(0.6 + 0.15 * i)
        x.save(folder / f"new-{i}.jpg", quality=90)
    return folder


def test_the_package_ships_a_kit_that_belongs_to_the_default_model():
    model = default_model_path()
    kit = kit_path_for(model)
    assert kit is not None, f"no update kit beside {model}"
    loaded = load_kit(kit, load_model(model))  # refused if it were another model's
    assert len(loaded) > 0
    # the real side the kit stands for: every real source the default was trained on
    real = {s for s in loaded.info["rows_by_source_full"] if s.startswith("real")}
    assert real == {"real:" + n for n in load_model(model).training_["real_sources"]}


@pytest.mark.slow
def test_update_of_the_shipped_model_from_a_plain_install(tmp_path, shipped_weights):
    new = _new_generator(tmp_path / "new")
    out = tmp_path / "m2.safetensors"
    taught = CliRunner().invoke(main, ["update", "--fake", f"new={new}", "--output", str(out)])
    assert taught.exit_code == 0, taught.output
    assert "(update kit) + 6 new faces" in taught.output
    before, after = load_model(default_model_path()), load_model(out)
    assert after.training_["fake_sources"]["new"]["n_faces"] == 6
    assert after.training_["updates"][-1]["stored"] == "update kit"
    assert set(before.training_["real_sources"]) == set(after.training_["real_sources"])

    def p_fake(model: str | None) -> np.ndarray:
        args = ["detect", str(new), "--format", "json"] + (["--model", model] if model else [])
        result = CliRunner().invoke(main, args)
        assert result.exit_code in (0, 4), result.output  # 4: some faces called fake
        rows = json.loads(result.stdout)
        assert len(rows) == 6 and all(r["error"] is None for r in rows), rows
        return np.array([r["p_fake"] for r in rows])

    # detect reads the new model, which has learnt the new source's faces
    assert p_fake(str(out)).mean() > p_fake(None).mean()

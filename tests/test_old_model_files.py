"""Model files an older fakespotter wrote (tests/data/old_models/<commit>/, made by
tests/old_models.py) load and score their inputs exactly as that version did: same labels,
warnings and faces, P(fake) and novelty to float rounding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from old_models import OLD_MODELS, write_inputs

import fakespotter
from fakespotter import weights
from fakespotter.backbones import BACKBONES

GENERATIONS = sorted(p for p in OLD_MODELS.iterdir() if p.is_dir())
FILES = [m for g in GENERATIONS for m in sorted(g.glob("*.safetensors"))]


def test_there_are_old_model_files():
    assert FILES, f"no model files under {OLD_MODELS}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("old_model_inputs")
    write_inputs(root)
    return root


@pytest.mark.parametrize("model", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_old_model_file_scores_as_it_did(model, inputs):
    backbone = model.stem.split("-", 1)[0]
    if not weights.is_cached(BACKBONES[backbone].weights):
        pytest.skip(f"{backbone} weights not cached; run `fakespotter weights fetch` first")
    want = json.loads(model.with_suffix("").with_suffix(".rows.json").read_text())
    files = [inputs / row["path"] for row in want]
    got = list(fakespotter.load(model, aligned=True).detect_many(files))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g["path"] = str(Path(g["path"]).relative_to(inputs))
        assert g.keys() == w.keys()
        assert g["p_fake"] == pytest.approx(w["p_fake"], rel=1e-6, abs=1e-9)
        assert g["novelty"] == pytest.approx(w["novelty"], rel=1e-5, abs=1e-6)
        rest = set(g) - {"p_fake", "novelty"}
        assert {k: g[k] for k in rest} == {k: w[k] for k in rest}

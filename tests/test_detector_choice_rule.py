"""The rule that picks the shipped model's face detector (benchmarks/detector_choice.py): the
rule itself on made-up scores, not the timings or the faces."""

from __future__ import annotations

import numpy as np

from benchmarks.detector_choice import decide


def scores(y: np.ndarray, noise: float, seed: int) -> np.ndarray:
    return y + np.random.default_rng(seed).normal(0, noise, len(y))


def model(name: str, p: np.ndarray, found: float = 1.0) -> dict:
    n = len(p)
    return {"detector": name, "p_fake": p, "found": np.arange(n) < round(found * n)}


Y = np.r_[np.zeros(120), np.ones(120)]
BASE = model("mtcnn", scores(Y, 0.6, 1))


def test_a_val_auc_within_the_noise_is_a_tie_that_goes_to_the_candidate():
    near = model("fast", scores(Y, 0.62, 2))  # a hair worse, well within 2 spreads
    result = decide(Y, BASE, near)
    assert result["val_auc"]["fast"] < result["val_auc"]["mtcnn"]
    assert result["auc_within_noise_or_better"] and result["chosen"] == "fast"


def test_a_clearly_worse_candidate_is_refused():
    worse = model("fast", scores(Y, 1.5, 3))
    assert decide(Y, BASE, worse)["chosen"] == "mtcnn"


def test_a_candidate_that_finds_fewer_faces_is_refused():
    fewer = model("fast", scores(Y, 0.6, 1), found=0.98)  # 2 points fewer, beyond 0.5
    result = decide(Y, BASE, fewer)
    assert not result["finds_as_many"] and result["chosen"] == "mtcnn"


def test_a_standing_goal_the_candidate_misses_vetoes_it():
    near = model("fast", scores(Y, 0.62, 2))
    missed = {"issue 28: >= 85% of a new generator caught after 100 of its faces": False}
    assert decide(Y, BASE, near, missed)["chosen"] == "mtcnn"
    met = dict.fromkeys(missed, True)
    assert decide(Y, BASE, near, met)["chosen"] == "fast"

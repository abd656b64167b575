"""The rule in benchmarks/train_default.py that picks the shipped default from detection_v2's
rows, and the section splice that writes those rows into docs/results.md."""

from __future__ import annotations

import importlib


def _load(name: str):
    return importlib.import_module(f"benchmarks.{name}")  # the repository root is on the path


def _row(idea, auc, ms=20.0, brier=0.04, ship=("--variant", "x")):
    return {
        "idea": idea,
        "val_auc": auc,
        "ms_per_face": ms,
        "val_brier": brier,
        "ship": list(ship) if ship else None,
    }


def test_rule_takes_the_best_shippable_within_budget_and_calibration():
    rule = _load("train_default")
    today = _row(rule.TODAY, 0.980, ms=20.0, brier=0.04)
    rows = [
        today,
        _row("not shippable", 0.999, ship=None),
        _row("too slow", 0.998, ms=20.0 + 41.0),  # 40 ms today end to end: over 80 ms
        _row("badly calibrated", 0.997, brier=0.051),
        _row("winner", 0.990, ms=30.0),
    ]
    assert rule.choose(rows, today_end_to_end_ms=40.0)["idea"] == "winner"
    # just inside the budget and the calibration slack still counts
    rows.append(_row("at the limits", 0.995, ms=60.0, brier=0.0499))
    assert rule.choose(rows, today_end_to_end_ms=40.0)["idea"] == "at the limits"


def test_rule_breaks_near_ties_by_speed():
    rule = _load("train_default")
    rows = [
        _row(rule.TODAY, 0.980, ms=20.0),
        _row("best but slow", 0.9915, ms=35.0),
        _row("close and fast", 0.9900, ms=21.0),
    ]
    assert rule.choose(rows, today_end_to_end_ms=40.0)["idea"] == "close and fast"
    rows[2]["val_auc"] = 0.9890  # now more than 0.002 behind
    assert rule.choose(rows, today_end_to_end_ms=40.0)["idea"] == "best but slow"


def test_detection_v2_section_is_replaced_in_place_or_appended():
    reproduce = _load("reproduce")
    doc = "# Results\n\n## A\na\n\n## Detection v2\nold\n\n## C\nc\n"
    new = reproduce.with_section(doc, "Detection v2", "## Detection v2\nnew\n")
    assert new == "# Results\n\n## A\na\n\n## Detection v2\nnew\n\n## C\nc\n"
    assert reproduce.section(new, "Detection v2") == "## Detection v2\nnew\n\n"
    appended = reproduce.with_section(
        "# Results\n\n## A\na\n", "Detection v2", "## Detection v2\nx\n"
    )
    assert appended.endswith("## A\na\n\n## Detection v2\nx\n")


def test_face_detector_rule_takes_the_fastest_that_loses_nothing():
    rule = _load("face_detectors")

    def row(name, wild, auc, ms):
        return {
            "detector": name,
            "found": {"wild/real": wild},
            "val_auc": auc,
            "ms_per_photo_mean": ms,
        }

    mtcnn = row("mtcnn", 0.9973, 0.9858, 34.0)
    # faster but worse on val, or finding fewer wild faces: MTCNN stays
    assert rule.choose([mtcnn, row("a", 0.998, 0.9791, 9.2)]) == "mtcnn"
    assert rule.choose([mtcnn, row("b", 0.996, 0.99, 9.2)]) == "mtcnn"
    # as good on both: the fastest of those
    assert rule.choose([mtcnn, row("c", 0.9973, 0.9858, 12.0), row("d", 1.0, 0.99, 11.0)]) == "d"
    assert rule.choose([row("e", 1.0, 0.99, 50.0), mtcnn]) == "mtcnn"  # slower: not chosen

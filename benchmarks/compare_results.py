"""Compare two reproduce.py results.json files number by number (a refactor must not move them).

    python -m benchmarks.compare_results OLD/results.json NEW/results.json

Ignored: timings (keys with "seconds"), where and how the run was made (meta: commit, command,
cache folder) and the pixel CNN row, whose training stops on a wall-clock budget. Exit code 1
when any other number differs by more than --tol.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

IGNORED_KEYS = {"commit", "command", "out", "training", "mtcnn_seconds"}


def rows_of(report: dict) -> dict:
    """Each table's rows keyed by what names them, the pixel CNN left out."""

    def key(row):
        return tuple(
            str(row.get(k))
            for k in (
                "backbone",
                "variant",
                "neuron",
                "idea",
                "taps",
                "train_generator",
                "test_generator",
                "kept",
            )
        )

    return {
        table: {key(r): r for r in rows if r.get("variant") != "pixel_cnn"}
        for table, rows in report.items()
        if isinstance(rows, list)
    }


def differences(old, new, path: str, tol: float):
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if k in IGNORED_KEYS or "seconds" in str(k):
                continue
            if k not in old or k not in new:
                yield f"{path}/{k}: only in {'new' if k in new else 'old'}"
                continue
            yield from differences(old[k], new[k], f"{path}/{k}", tol)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            yield from differences(a, b, f"{path}[{i}]", tol)
    elif (
        isinstance(old, (int, float))
        and isinstance(new, (int, float))
        and not isinstance(old, bool)
    ):
        if not (
            math.isclose(old, new, rel_tol=0, abs_tol=tol) or (math.isnan(old) and math.isnan(new))
        ):
            yield f"{path}: {old} -> {new}"
    elif old != new:
        yield f"{path}: {old!r} -> {new!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--tol", type=float, default=1e-9)
    args = parser.parse_args()
    old, new = (json.load(open(p)) for p in (args.old, args.new))
    found = list(differences(rows_of(old), rows_of(new), "", args.tol))
    n = sum(len(t) for t in rows_of(old).values())
    print(f"{n} rows compared; {len(found)} differences")
    for line in found[:50]:
        print(" ", line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

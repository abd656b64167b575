"""Model files written by an older fakespotter, kept in tests/data/old_models/ with the rows that
version gave for a fixed set of inputs: tests/test_old_model_files.py checks that today's code
loads every one of them and scores them identically (issue #30: a refactor must not change what
a user's saved model says).

    python tests/old_models.py      # a new generation: tests/data/old_models/<commit>/

Run it only to add a generation (before a change to the estimator or the model file), never to
make a failing test pass: the files of a generation are what that version wrote.
Each model is trained through `fakespotter train --aligned` on noise faces (real: noise, fake:
blurred noise), with held-out folders so that the file carries an operating point, an uncertain
band and a novelty limit; the inputs are noise faces of other seeds, aligned (no face detector).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OLD_MODELS = HERE / "data" / "old_models"
# (file name, the train options beyond the folders)
RECIPES = (
    ("dlib-layer", ["--backbone", "dlib", "--variant", "layer"]),
    # the shipped model's variant, on its first 8 layers (a small file)
    (
        "sface-kmultisection-channel",
        [*("--backbone", "sface", "--variant", "kmultisection-channel", "--taps", "8")],
    ),
)


def write_inputs(folder: Path) -> list[Path]:
    """The scored inputs: six noise faces and six blurred ones, of seeds no model trained on."""
    from conftest import write_noise_faces

    write_noise_faces(folder / "noise", 6, smooth=False, seed=101)
    write_noise_faces(folder / "blurred", 6, smooth=True, seed=102)
    return sorted(folder.rglob("*.png"))


def main() -> None:
    sys.path.insert(0, str(HERE))  # conftest's writers
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    out = OLD_MODELS / commit
    if out.exists():
        sys.exit(f"{out} exists: a generation is written once")
    with tempfile.TemporaryDirectory() as tmp:
        from conftest import write_noise_faces

        root = Path(tmp)
        # every folder holds some faces of the other kind: P(fake) spread over (0, 1), an
        # operating point and an uncertain band inside it, not the saturated scores and
        # trivial cut of a task without overlap
        for name, seed in (("real", 1), ("fake", 2), ("val-real", 3), ("val-fake", 4)):
            fake = name.endswith("fake")
            write_noise_faces(root / name, 12, smooth=fake, seed=seed)
            other = write_noise_faces(root / f"{name}-other", 4, smooth=not fake, seed=seed + 10)
            for i, f in enumerate(sorted(other.iterdir())):
                f.rename(root / name / f"other{i}.png")
        inputs = write_inputs(root / "inputs")
        out.mkdir(parents=True)
        for name, options in RECIPES:
            model = out / f"{name}.safetensors"
            train = [str(Path(sys.executable).parent / "fakespotter"), "train", "--aligned"]
            train += ["--real", str(root / "real"), "--fake", str(root / "fake")]
            train += ["--val-real", str(root / "val-real"), "--val-fake", str(root / "val-fake")]
            subprocess.run([*train, *options, "--output", str(model)], check=True)
            import fakespotter

            rows = list(fakespotter.load(model, aligned=True).detect_many(inputs))
            for row in rows:  # the path relative to the inputs' folder
                row["path"] = str(Path(row["path"]).relative_to(root / "inputs"))
            (out / f"{name}.rows.json").write_text(json.dumps(rows, indent=1) + "\n")
            print(f"wrote {model} and its rows")


if __name__ == "__main__":
    main()

"""Print the markdown table of docs/hostile.md from a real run of `fakespotter detect`.

    python tools/hostile_table.py [--model MODEL]

Writes the hostile corpus of tests/hostile.py into a temporary folder, runs
``fakespotter detect FOLDER --aligned --format jsonl --max-bytes 2000000`` on it (one
subfolder is deleted after listing, to show a file vanishing mid-scan), and prints one table
row per input with exactly the text the user sees. Without --model it first trains a tiny
model on noise images (needs the cached dlib weights: `fakespotter weights fetch dlib`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile import MAX_BYTES_IN_TESTS, face_like, restore_permissions, write_corpus  # noqa: E402

from fakespotter import photos  # noqa: E402
from fakespotter.cli import main as cli  # noqa: E402


def tiny_model(folder: Path) -> Path:
    for label, smooth in (("real", False), ("fake", True)):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            im = face_like(96, i + 100 * smooth)
            if smooth:
                im = im.resize((24, 24)).resize((96, 96))
            im.save(folder / label / f"{i}.png")
    model = folder / "model.safetensors"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--real",
            str(folder / "real"),
            "--fake",
            str(folder / "fake"),
            "--backbone",
            "dlib",
            "--variant",
            "layer",
            "--aligned",
            "--output",
            str(model),
        ],
    )
    if result.exit_code:
        sys.exit(result.output)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "train")
        corpus = tmp / "corpus"
        cases = write_corpus(corpus)
        (corpus / "vanishing").mkdir()
        face_like().save(corpus / "vanishing" / "deleted_after_listing.png")
        listed = photos.iter_files

        def list_then_vanish(paths):
            files = list(listed(paths))
            shutil.rmtree(corpus / "vanishing")
            return iter(files)

        photos.iter_files = list_then_vanish
        try:
            result = CliRunner().invoke(
                cli,
                [
                    "detect",
                    str(corpus),
                    "--model",
                    str(model),
                    "--aligned",
                    "--format",
                    "jsonl",
                    "--max-bytes",
                    str(MAX_BYTES_IN_TESTS),
                ],
            )
        finally:
            photos.iter_files = listed
            restore_permissions(cases)
        if result.exit_code not in (0, 3):  # 3: some inputs had no result, as expected here
            sys.exit(result.output)
        notes = {str(c.path): c.note for c in cases}
        names = {str(c.path): c.name for c in cases}
        print("| input | what it is | what `detect` reports |")
        print("|---|---|---|")
        for line in result.stdout.splitlines():
            row = json.loads(line)
            path = row["path"]
            name = names.get(path, str(Path(path).relative_to(corpus)))
            name = name.replace("\n", "\\n")  # a newline in a name, made visible
            what = row["error"] or f"scored: face {row['face']}, p_fake {row['p_fake']:.2f}"
            print(f"| `{name}` | {notes.get(path, '') or '-'} | {what} |")


if __name__ == "__main__":
    main()

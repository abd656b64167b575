"""Measure the shipped default model through the CLI and write docs/default_model.md.

    python -m benchmarks.evaluate_default [--perturb jpeg:50,blur:1,noise:5]

Runs the user's own commands on ../shared/faces: `fakespotter evaluate` on the test split
(with a report and per-generator breakdown from the manifest) and on the second halves of
wild/real (UTKFace) and studio/real (CIPLAB): real photos of two other sources, whose first
halves the model was trained on and whose second halves were never used for any choice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.teach import halves
from benchmarks.train_default import link_folder

ROOT = Path(__file__).resolve().parents[1]
FACES = "../shared/faces"


def run(args: list[str]) -> dict:
    exe = str(Path(sys.executable).parent / "fakespotter")
    print("$ fakespotter", " ".join(args), flush=True)
    out = subprocess.run([exe, *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout)


AUGMENT_NOTE = """
The model was trained with `--augment` because the robustness study in
[results.md](results.md) (perturbed *test* photos) showed it keeps scores steady under
JPEG, blur and noise; so these perturbed-test numbers helped make that choice and are not an
untouched estimate.
"""


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--perturb", default="")
    args = parser.parse_args()
    test_args = [
        "evaluate",
        "--real",
        f"{FACES}/test/real",
        "--fake",
        f"{FACES}/test/fake",
        "--format",
        "json",
        "--report",
        "docs/default-report",
        "--overwrite",  # the committed report is replaced
        "--manifest",
        f"{FACES}/manifest.csv",
    ]
    if args.perturb:
        test_args += ["--perturb", args.perturb]
    held_out = {  # out/teach/<name>: symbolic links to the second half of each source
        name: link_folder(name, halves(ROOT / FACES / source)[1])
        for name, source in (("wild-second", "wild/real"), ("studio-second", "studio/real"))
    }
    held_args = {
        name: ["evaluate", "--real", str(folder.relative_to(ROOT)), "--format", "json"]
        for name, folder in held_out.items()
    }
    test = run(test_args)
    held = {name: run(a) for name, a in held_args.items()}
    wild, studio = held["wild-second"], held["studio-second"]
    from fakespotter.persistence import default_model_path, load_model

    det = load_model(default_model_path())
    t = det.training_
    report = json.loads((ROOT / "docs/default-report/metrics.json").read_text())
    groups = report.get("groups") or {}
    lines = [
        f"| {g} | {m.get('n')} | {pct(m.get('fake_accuracy') if m.get('kind') == 'fake' else m.get('real_accuracy'))} |"
        for g, m in sorted(groups.items())
    ]
    pert = report.get("perturbations") or []
    pert_lines = [
        f"| {r['perturbation']} | {r['auc']:.3f} | {pct(r['real_accuracy'])} | {pct(r['fake_accuracy'])} |"
        for r in pert
    ]  # the report's list starts with the clean row, "none"
    band = getattr(det, "uncertain_", None)
    band_text = (
        ", no uncertain band"
        if band is None
        else f", uncertain from {band[0]:.3f} (at most 5% of `val` fakes score below it)"
        + (" and widened down to 0.5 by the label rule (a face at 0.5 or more is never real)"
           if band[0] > 0.5 else "")
    )  # fmt: skip
    text = (
        f"""# The shipped default model, measured

Model: `src/fakespotter/data/default.safetensors` — backbone `{det.backbone}`,
variant `{det.variant}`, {len(det.coef_)} features, C = {det.C_:g}, cross-validated AUC on its
training data {det.cv_auc_:.3f}. Trained by `python -m benchmarks.train_default` as
`{t.get("command")}` on {t.get("n_real")} real + {t.get("n_fake")} fake faces
({t.get("date")}){"; then " + t["then"] if t.get("then") else ""}.

Measured with:

    python -m benchmarks.evaluate_default{" --perturb " + args.perturb if args.perturb else ""}

which runs

    fakespotter {" ".join(test_args)}
    fakespotter {" ".join(held_args["wild-second"])}
    fakespotter {" ".join(held_args["studio-second"])}

(`out/teach/wild-second` and `out/teach/studio-second`: links to the second half, in sorted
file-name order, of `../shared/faces/wild/real` and `studio/real`.)

Labels come from the model's operating point: fake at P(fake) >= {test["threshold"]:.3f}
(chosen on `val` for at most 1% of real photos called fake){band_text}. "Real kept" is the
share of real photos not called fake, "fakes caught" the share of fakes called fake;
"uncertain" the share of each class inside the band.

| set | n real | n fake | no face | accuracy | real kept | fakes caught | real uncertain | fakes uncertain | AUC | AP | EER |
|---|---|---|---|---|---|---|---|---|---|---|---|
| `test` (FFHQ vs StyleGAN 1/2/x) | {test["n_real"]} | {test["n_fake"]} | {test["n_no_face"]} | {pct(test["accuracy"])} | {pct(test["real_accuracy"])} | {pct(test["fake_accuracy"])} | {pct(test.get("real_uncertain"))} | {pct(test.get("fake_uncertain"))} | {test["auc"]:.4f} | {test["ap"]:.4f} | {pct(test["eer"])} |
| `wild/real` 2nd half (UTKFace) | {wild["n_real"]} | 0 | {wild["n_no_face"]} | – | {pct(wild["real_accuracy"])} | – | {pct(wild.get("real_uncertain"))} | – | – | – | – |
| `studio/real` 2nd half (CIPLAB) | {studio["n_real"]} | 0 | {studio["n_no_face"]} | – | {pct(studio["real_accuracy"])} | – | {pct(studio.get("real_uncertain"))} | – | – | – | – |

So {pct(1 - wild["real_accuracy"])} of the held-out UTKFace photos and
{pct(1 - studio["real_accuracy"])} of the held-out CIPLAB photos are called fake at the model's
threshold. A real source the model has not trained on at all is measured by leaving one out
([teaching.md](teaching.md), section 1).

## By generator and source (test)

| group | n | share judged correctly |
|---|---|---|
{chr(10).join(lines)}
"""
        + (
            f"""
## Perturbed copies (test; applied to the photo before detection)
{AUGMENT_NOTE if t.get("augment") else ""}
| perturbation | AUC | real kept | fakes caught |
|---|---|---|---|
{chr(10).join(pert_lines)}
"""
            if pert_lines
            else ""
        )
        + """
The full report with plots: [default-report/report.md](default-report/report.md).
"""
    )
    (ROOT / "docs" / "default_model.md").write_text(text)
    print("wrote docs/default_model.md")


if __name__ == "__main__":
    main()

"""Measure the shipped default model through the CLI and write docs/default_model.md.

    python benchmarks/evaluate_default.py [--perturb jpeg:50,blur:1,noise:5]

Runs the user's own commands on ../shared/faces: `fakespotter evaluate` on the test split
(with a report and per-generator breakdown from the manifest) and on wild/real (real photos
from another source, never trained on or used for any choice).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
    wild_args = ["evaluate", "--real", f"{FACES}/wild/real", "--format", "json"]
    test = run(test_args)
    wild = run(wild_args)
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
    )
    text = (
        f"""# The shipped default model, measured

Model: `src/fakespotter/data/default.safetensors` — backbone `{det.backbone}`,
variant `{det.variant}`, {len(det.coef_)} features, C = {det.C_:g}, cross-validated AUC on its
training data {det.cv_auc_:.3f}. Trained by `python benchmarks/train_default.py` as
`{t.get("command")}` on {t.get("n_real")} real + {t.get("n_fake")} fake faces
({t.get("date")}).

Measured with:

    python benchmarks/evaluate_default.py{" --perturb " + args.perturb if args.perturb else ""}

which runs

    fakespotter {" ".join(test_args)}
    fakespotter {" ".join(wild_args)}

Labels come from the model's operating point: fake at P(fake) >= {test["threshold"]:.3f}
(chosen on `val` for at most 1% of real photos called fake){band_text}. "Real kept" is the
share of real photos not called fake, "fakes caught" the share of fakes called fake;
"uncertain" the share of each class inside the band.

| set | n real | n fake | no face | accuracy | real kept | fakes caught | real uncertain | fakes uncertain | AUC | AP | EER |
|---|---|---|---|---|---|---|---|---|---|---|---|
| `test` (FFHQ vs StyleGAN 1/2/x) | {test["n_real"]} | {test["n_fake"]} | {test["n_no_face"]} | {pct(test["accuracy"])} | {pct(test["real_accuracy"])} | {pct(test["fake_accuracy"])} | {pct(test.get("real_uncertain"))} | {pct(test.get("fake_uncertain"))} | {test["auc"]:.4f} | {test["ap"]:.4f} | {pct(test["eer"])} |
| `wild/real` (UTKFace, another source) | {wild["n_real"]} | 0 | {wild["n_no_face"]} | – | {pct(wild["real_accuracy"])} | – | {pct(wild.get("real_uncertain"))} | – | – | – | – |

So {pct(1 - wild["real_accuracy"])} of real photos from a source the model never saw are
called fake at the model's threshold.

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

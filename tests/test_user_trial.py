"""The findings of a new user's trial (issue #11), each reproduced and asserted.

Defects first (data loss with --resume, missing optional packages, confident answers on
inputs the method does not cover), then the friction list. Video tracks have their own tests
in test_video.py and the server's in test_serve.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_noise_faces
from PIL import Image

from fakespotter.cli import EXIT_FAKE_FOUND, EXIT_INPUTS_FAILED, EXIT_USAGE, main
from fakespotter.faces.pipeline import (
    MIN_DETECTION_SCORE,
    MIN_MEASURED_FACE_PX,
    FaceCrop,
    FaceCropper,
)
from fakespotter.rows import FIELDS, face_rows

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three noise 'faces' (aligned crops) and one file that is not an image."""
    folder = write_noise_faces(tmp_path / "photos", 3, smooth=True, seed=4)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def detect(*args, **kwargs):
    return CliRunner().invoke(main, ["detect", *map(str, args)], **kwargs)


# -- defect 1: nothing lost --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_never_touches_a_file_it_did_not_write(tmp_path, tiny_model, photos, fmt):
    notes = tmp_path / "notes.md"
    text = "# my notes\n\n" + "a line of my own work\n" * 800  # 17 KB, as in the trial
    notes.write_text(text)
    result = detect(
        photos, "--model", tiny_model, "--aligned", "--format", fmt, "--output", notes, "--resume"
    )
    assert result.exit_code == 1 and "not a fakespotter" in result.output
    assert notes.read_text() == text  # not truncated, not appended to
    # a partial last line that is not the start of a row is someone's text too
    notes.write_text("no newline at the end")
    assert (
        detect(
            photos,
            "--model",
            tiny_model,
            "--aligned",
            "--format",
            fmt,
            "--output",
            notes,
            "--resume",
        ).exit_code
        == 1
    )
    assert notes.read_text() == "no newline at the end"


def test_resume_refuses_another_format_and_another_model(tmp_path, tiny_model, photos):
    scan = tmp_path / "scan.csv"
    assert (
        detect(photos, "--model", tiny_model, "--aligned", "--output", scan).exit_code
        == EXIT_INPUTS_FAILED
    )
    before = scan.read_bytes()
    result = detect(
        photos,
        "--model",
        tiny_model,
        "--aligned",
        "--format",
        "jsonl",
        "--output",
        scan,
        "--resume",
    )  # a csv resumed as jsonl
    assert result.exit_code == 1 and scan.read_bytes() == before

    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_model.read_bytes())
    with open(other, "ab") as f:  # the same model, another file: another identity
        f.write(b" ")
    scan.write_bytes(before.rsplit(b"\n", 2)[0] + b"\n")  # as if interrupted
    cut = scan.read_bytes()
    result = detect(photos, "--model", other, "--aligned", "--output", scan, "--resume")
    assert result.exit_code == 1 and "another model" in result.output
    assert scan.read_bytes() == cut
    # with the model that began it, the scan goes on
    result = detect(photos, "--model", tiny_model, "--aligned", "--output", scan, "--resume")
    assert result.exit_code == EXIT_INPUTS_FAILED and scan.read_bytes() == before


def test_output_never_replaces_a_stranger_file_but_replaces_its_own(tmp_path, tiny_model, photos):
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "settings"}\n')
    result = detect(photos, "--model", tiny_model, "--aligned", "--output", notes)
    assert result.exit_code == 1 and "will not overwrite" in result.output
    assert notes.read_text() == '{"my": "settings"}\n'
    scan = tmp_path / "scan.json"
    for again in ([], ["--overwrite"]):  # a second run replaces its own output when told to
        assert (
            detect(photos, "--model", tiny_model, "--aligned", "--output", scan, *again).exit_code
            == EXIT_INPUTS_FAILED
        )
        assert len(json.loads(scan.read_text())) == 4


def test_rows_record_the_model_that_scored_them(tiny_model, photos):
    from fakespotter.modelfile import model_id

    rows = json.loads(detect(photos, "--model", tiny_model, "--aligned", "--format", "json").stdout)
    assert {r["model"] for r in rows} == {model_id(tiny_model)} and list(rows[0]) == FIELDS


# -- defect 3: missing optional packages -------------------------------------------------------


def test_missing_matplotlib_is_refused_before_any_work(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    real = tiny_model.parent / "real"
    report = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--real",
            str(real),
            "--model",
            str(tiny_model),
            "--aligned",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 1 and "pip install -e '.[report]'" in result.output
    assert "Traceback" not in result.output and not report.exists()


def test_a_report_without_matplotlib_still_has_its_numbers(tmp_path, monkeypatch):
    from fakespotter.evaluation import write_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = write_report(tmp_path / "r", labels=[0, 1, 0, 1], p_fake=[0.1, 0.9, 0.2, 0.7])
    assert "not drawn" in result["plots"] and result["overall"]["auc"] == 1.0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["overall"]["n_real"] == 2
    assert (tmp_path / "r" / "report.md").read_text().strip()


def test_video_without_pyav_is_refused_before_any_work(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 100)
    result = detect(clip, "--model", tiny_model)
    assert result.exit_code == 1 and "pip install -e '.[video]'" in result.output


# -- defect 4: inputs the method does not cover ------------------------------------------------


def test_aligned_image_that_is_no_face_is_flagged_a_flat_one_has_none(tmp_path, tiny_model):
    dark = tmp_path / "dark.png"  # a photo of nothing: texture, but no face
    noise = np.random.default_rng(0).integers(0, 40, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(dark)
    (row,) = json.loads(detect(dark, "--model", tiny_model, "--aligned", "--format", "json").stdout)
    assert row["p_fake"] is not None and "does not look like a face" in row["warning"]
    result = detect(dark, "--model", tiny_model, "--aligned")
    assert "!" in result.stdout.splitlines()[1] and "1 flagged" in result.stderr
    # a flat grey image (issue #27, 23): no face, so no score and no label
    grey = tmp_path / "grey.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(grey)
    (row,) = json.loads(detect(grey, "--model", tiny_model, "--aligned", "--format", "json").stdout)
    assert row["error"] == "no face found" and row["label"] is None and row["p_fake"] is None
    assert "1 no face" in detect(grey, "--model", tiny_model, "--aligned").stderr


def test_aligned_real_face_is_not_flagged(weight_file, faces_dir):
    weight_file("mtcnn_onet")
    from fakespotter.faces import load_image
    from fakespotter.faces.pipeline import FFHQ_LANDMARKS

    cropper = FaceCropper(112, FFHQ_LANDMARKS * 112, aligned=True, progress=False)
    files = (
        sorted((faces_dir / "val" / "real").iterdir())[:10]
        + sorted((faces_dir / "val" / "fake").iterdir())[:10]
    )
    assert all(not cropper(load_image(f))[0].warnings for f in files)


@pytest.mark.slow
def test_sideways_photo_is_turned_and_says_so(tmp_path, weight_file):
    for stage in ("pnet", "rnet", "onet"):
        weight_file(f"mtcnn_{stage}")
    from fakespotter.faces import load_image
    from fakespotter.faces.pipeline import FFHQ_LANDMARKS

    cropper = FaceCropper(112, FFHQ_LANDMARKS * 112, progress=False)
    photo = load_image(ASTRONAUT)
    (upright,) = cropper(photo)
    assert upright.rotation == 0 and not upright.warnings
    h, w = photo.shape[:2]
    for turns in (1, 2, 3):  # photo turned counter-clockwise; found faces map back onto it
        (face,) = cropper(np.ascontiguousarray(np.rot90(photo, turns)))
        assert face.rotation == 90 * turns and "turning the photo" in face.warnings[0]
        x0, y0, x1, y1 = upright.box
        corners = {0: (x0, y0), 1: (y0, w - x1), 2: (w - x1, h - y1), 3: (h - y1, x0)}[turns]
        assert np.allclose(face.box[:2], corners, atol=8), (turns, face.box, corners)
        # the crop is the upright face: close to the unturned photo's crop
        assert np.abs(face.crop.astype(float) - upright.crop).mean() < 20


def test_small_face_and_low_confidence_are_warned():
    crop = np.zeros((4, 4, 3), np.uint8)
    fine = FaceCrop((0, 0, 100, 100), 0.999, np.zeros((5, 2)), crop, size=100)
    assert fine.warnings == []
    small = FaceCrop((0, 0, 30, 30), 0.999, np.zeros((5, 2)), crop, size=MIN_MEASURED_FACE_PX - 1)
    assert "small face" in small.warnings[0]
    doubtful = FaceCrop(
        (0, 0, 100, 100), MIN_DETECTION_SCORE - 0.01, np.zeros((5, 2)), crop, size=100
    )
    assert "low face-detection confidence" in doubtful.warnings[0]
    (row,) = face_rows("x.jpg", [small], [0.9])
    assert row.warning == small.warnings[0] and row.face_size == MIN_MEASURED_FACE_PX - 1


def test_small_face_in_a_real_photo_gets_a_warning(tmp_path, tiny_model):
    small = tmp_path / "small.jpg"
    with Image.open(ASTRONAUT) as im:
        canvas = Image.new("RGB", (1200, 1200), (200, 200, 200))
        canvas.paste(im.resize((230, 230)), (40, 40))  # the face is about 40 px wide
        canvas.save(small)
    rows = json.loads(detect(small, "--model", tiny_model, "--format", "json").stdout)
    faces = [r for r in rows if r["face"] is not None]
    assert faces and all("small face" in r["warning"] for r in faces)
    assert all(r["face_size"] < MIN_MEASURED_FACE_PX and r["detection_score"] > 0 for r in faces)


# -- friction ----------------------------------------------------------------------------------


def test_exit_codes_and_summary_line(tmp_path, tiny_model, photos):
    good = tmp_path / "good"
    write_noise_faces(good, 2, smooth=True, seed=8)
    result = detect(good, "--model", tiny_model, "--aligned")
    assert result.exit_code == 0
    assert (
        "2 faces: 2 fake, 0 real" in result.stderr and "0 inputs without a result" in result.stderr
    )
    assert detect(photos, "--model", tiny_model, "--aligned").exit_code == EXIT_INPUTS_FAILED
    result = detect(good, "--model", tiny_model, "--aligned", "--fail-on-fake")
    assert result.exit_code == EXIT_FAKE_FOUND  # noise blurred like the tiny model's fakes
    assert detect(good, "--no-such-option").exit_code == EXIT_USAGE
    assert "Exit codes" in CliRunner().invoke(main, ["detect", "--help"]).output


def test_table_shows_boxes_and_faces_are_numbered_left_to_right():
    crop = np.zeros((4, 4, 3), np.uint8)
    right = FaceCrop((300, 10, 400, 110), 0.99, np.zeros((5, 2)), crop, size=100)
    left = FaceCrop((10, 20, 110, 120), 0.99, np.zeros((5, 2)), crop, size=100)
    rows = face_rows("group.jpg", [right, left], [0.9, 0.1])  # largest-first order from MTCNN
    assert [(r.face, r.box[0], r.p_fake) for r in rows] == [(0, 10, 0.1), (1, 300, 0.9)]
    from io import BytesIO

    from fakespotter.results import RowWriter

    buf = BytesIO()
    writer = RowWriter(buf, "table")
    writer.write(rows)
    writer.close()
    lines = buf.getvalue().decode().splitlines()
    assert "box" in lines[0] and "10,20,110,120" in lines[1] and "300,10,400,110" in lines[2]


def test_boxes_are_clipped_to_the_photo():
    class Edge:  # a detector that finds a face reaching past the photo's border
        def detect(self, image):
            from fakespotter.faces.mtcnn import Face

            points = np.array([[30, 30], [60, 30], [45, 45], [35, 60], [55, 60]], float)
            return [Face(box=(-20.0, -10.0, 90.0, 100.0), score=0.999, landmarks=points)]

    (face,) = FaceCropper(
        112, np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], float), detector=Edge()
    )(np.zeros((80, 80, 3), np.uint8))
    assert face.box == (0.0, 0.0, 80.0, 80.0) and face.size == 110


def test_annotate_draws_boxes(tmp_path, tiny_model):
    out = tmp_path / "drawn"
    result = detect(ASTRONAUT, "--model", tiny_model, "--annotate", out)
    assert result.exit_code == 0
    (drawn,) = out.iterdir()
    picture = np.asarray(Image.open(drawn).convert("RGB")).astype(int)
    original = np.asarray(Image.open(ASTRONAUT).convert("RGB")).astype(int)
    assert picture.shape == original.shape
    row = json.loads(detect(ASTRONAUT, "--model", tiny_model, "--format", "json").stdout)[0]
    x0, y0, x1, y1 = map(int, row["box"])
    edge = np.abs(picture[y0 + 5 : y1 - 5, x0] - original[y0 + 5 : y1 - 5, x0]).mean()
    inside = np.abs(
        picture[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20]
        - original[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20]
    ).mean()
    assert edge > 40 and inside < 6  # the box is drawn, the face left alone (JPEG noise aside)


def test_report_names_never_collide():
    from fakespotter.annotate import output_stem

    a, b = output_stem("a/clip.mp4"), output_stem("b/clip.mp4")
    assert a != b and a.startswith("clip-") and output_stem("a/clip.mp4") == a


@pytest.mark.slow
def test_evaluate_perturb_shows_results_without_report(tiny_model):
    real, fake = tiny_model.parent / "real", tiny_model.parent / "fake"
    args = [
        "evaluate",
        "--real",
        str(real),
        "--fake",
        str(fake),
        "--model",
        str(tiny_model),
        "--aligned",
        "--perturb",
        "blur:1,jpeg:50",
    ]
    result = CliRunner().invoke(main, args + ["--format", "json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert set(m["perturbations"]) == {"blur:1", "jpeg:50"}
    assert (
        0 <= m["perturbations"]["blur:1"]["auc"] <= 1
        and m["perturbations"]["jpeg:50"]["n_real"] == 12
    )
    table = CliRunner().invoke(main, args).stdout
    assert "perturbation" in table and "blur:1" in table and "jpeg:50" in table


def test_train_names_dropped_images_and_warns_when_unfit(tmp_path):
    pytest.importorskip("fakespotter.backbones")
    from fakespotter import weights
    from fakespotter.backbones import BACKBONES

    if not weights.is_cached(BACKBONES["dlib"].weights):
        pytest.skip("dlib weights not cached; run `fakespotter weights fetch` first")
    real = write_noise_faces(tmp_path / "real", 8, smooth=False, seed=1)
    fake = write_noise_faces(tmp_path / "fake", 8, smooth=False, seed=2)  # same kind: chance
    (real / "broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--backbone",
            "dlib",
            "--variant",
            "layer",
            "--aligned",
            "--output",
            str(tmp_path / "m.safetensors"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"skipped {real / 'broken.png'}: not an image" in result.stderr
    assert "1 images were left out" in result.stderr
    assert "warning: only 8 faces" in result.stderr
    assert "near chance" in result.stderr
    assert "\x1b[" not in result.output  # no cursor escapes when stderr is not a terminal


def test_format_follows_the_output_extension_and_empty_folder_json(tmp_path, tiny_model, photos):
    out = tmp_path / "scan.json"
    detect(photos, "--model", tiny_model, "--aligned", "--output", out)
    assert len(json.loads(out.read_text())) == 4
    out = tmp_path / "scan.jsonl"
    detect(photos, "--model", tiny_model, "--aligned", "--output", out)
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()][0].endswith(
        "000.png"
    )
    (tmp_path / "empty").mkdir()
    result = detect(tmp_path / "empty", "--model", tiny_model, "--format", "json")
    assert json.loads(result.stdout) == [] and "no image or video files" in result.stderr


def test_refused_size_names_the_option(tmp_path, tiny_model):
    rows = json.loads(
        detect(ASTRONAUT, "--model", tiny_model, "--max-bytes", "100", "--format", "json").stdout
    )
    assert "--max-bytes raises it" in rows[0]["error"]
    rows = json.loads(
        detect(ASTRONAUT, "--model", tiny_model, "--max-pixels", "100", "--format", "json").stdout
    )
    assert "--max-pixels raises it" in rows[0]["error"]


def test_global_option_after_the_command_gets_a_hint():
    result = detect(ASTRONAUT, "--threads", "1")
    assert result.exit_code == EXIT_USAGE
    assert "put it before the command" in result.output and "fakespotter --threads" in result.output
    # issue #27 (23): no look-alike of the command's own ("Did you mean '--threshold'?")
    assert "--threshold" not in result.output and "Did you mean" not in result.output
    for args in (["train", "--threads=2"], ["weights", "fetch", "--threads", "2"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == EXIT_USAGE, args
        assert "is an option of fakespotter itself" in result.output, result.output
        assert "Did you mean" not in result.output


def test_every_option_has_help_text():
    def commands(group, prefix=""):
        for name, command in group.commands.items():
            yield f"{prefix}{name}", command
            if isinstance(command, click.Group):
                yield from commands(command, f"{prefix}{name} ")

    missing = [
        f"{name} {param.opts[0]}"
        for name, command in [("", main), *commands(main)]
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert missing == []


def test_video_errors_have_no_errno_numbers(tmp_path, tiny_model):
    pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (row,) = json.loads(
        detect(bad, tmp_path / "missing.mp4", "--model", tiny_model, "--format", "json").stdout
    )[:1]
    assert row["error"].startswith("cannot open video") and "Errno" not in row["error"]
    assert row["error"].count(str(bad)) == 1


def test_two_videos_with_one_name_get_their_own_report_files(tmp_path, tiny_model):
    pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")
    pytest.importorskip("matplotlib", reason="the 'report' extra (matplotlib) is not installed")
    from test_video import write_panning_video

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_panning_video(tmp_path / folder / "clip.mp4")
    report = tmp_path / "report"
    result = detect(
        tmp_path / "a" / "clip.mp4",
        tmp_path / "b" / "clip.mp4",
        "--model",
        tiny_model,
        "--aligned",
        "--report",
        report,
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in report.iterdir())
    assert len(names) == 4 and all(n.startswith("clip-") for n in names)  # 2 json + 2 png
    rows = json.loads(result.stdout)
    assert all(r["start"] is not None and r["end"] >= r["start"] for r in rows)
    assert result.stderr.count("video ") == 2  # a verdict line per video


def test_an_error_line_is_never_glued_to_a_progress_bar():
    from io import StringIO

    from tqdm import tqdm

    from fakespotter.cli.app import one_line_errors as _one_line_errors
    from fakespotter.errors import UserError

    stream = StringIO()

    @_one_line_errors
    def fails_mid_way():
        bar = tqdm(range(10), file=stream)
        for i in bar:
            if i == 3:
                raise UserError("the folder vanished")

    with pytest.raises(click.ClickException, match="the folder vanished"):
        fails_mid_way()
    assert not list(tqdm._instances)  # the bar was closed (and its line ended) before the error
    assert stream.getvalue().endswith("\n")


def test_user_errors_are_one_line_bugs_keep_their_traceback(tmp_path, monkeypatch):
    from fakespotter.cli import detect as detect_module

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    result = detect(ASTRONAUT, "--model", bad)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Error:" in result.output
    debug = CliRunner().invoke(main, ["--debug", "detect", str(ASTRONAUT), "--model", str(bad)])
    assert debug.exit_code == 1 and debug.exc_info[0].__name__ == "ModelFileError"  # the traceback

    def bug(*args, **kwargs):
        raise ValueError("a bug in fakespotter")

    monkeypatch.setattr(detect_module, "load_detector", bug)
    result = detect(ASTRONAUT)
    assert isinstance(result.exception, ValueError) and "Error:" not in result.output

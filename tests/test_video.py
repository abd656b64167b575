"""Videos: frame sampling, face tracking and the per-track and per-video summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakespotter.operating_point import OperatingPoint
from fakespotter.video import (
    TRACK_SIMILARITY,
    VideoError,
    confidently_fake,
    iou,
    link_faces,
    merge_ranges,
    plot_timeline,
    sample_frames,
    scan_video,
    track_similarity,
)

av = pytest.importorskip("av", reason="the 'video' extra (PyAV) is not installed")

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"
VIDEO_FPS = 10
N_FRAMES = 20  # 2 seconds
CROP = 384


def write_panning_video(path: Path) -> list[int]:
    """The astronaut photo seen through a window that slides right by 3 px a frame.

    Returns the window's left edge for each frame."""
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    lefts = [3 * i for i in range(N_FRAMES)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width = stream.height = CROP
        stream.pix_fmt = "yuv420p"
        for left in lefts:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(photo[64 : 64 + CROP, left : left + CROP]), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return lefts


class ScriptedDetector:
    """Stands in for a fitted FakeSpotter: returns the given scores, one per crop, in order."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.seen = 0

    def predict_proba(self, crops):
        assert crops.dtype == np.uint8 and crops.ndim == 4
        p = np.array(self.scores[self.seen : self.seen + len(crops)])
        self.seen += len(crops)
        return np.column_stack([1 - p, p])


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "pan.mp4"
    write_panning_video(path)
    return path


def test_sample_frames_takes_one_frame_per_interval(video):
    frames = list(sample_frames(video, fps=4))
    times = [t for t, _ in frames]
    # at 10 fps, the first frame at or after each quarter second
    assert times == pytest.approx([0.0, 0.3, 0.5, 0.8, 1.0, 1.3, 1.5, 1.8])
    assert frames[0][1].shape == (CROP, CROP, 3) and frames[0][1].dtype == np.uint8
    assert len(list(sample_frames(video, fps=100, max_frames=5))) == 5
    assert len(list(sample_frames(video, fps=100))) == N_FRAMES  # never more than the source has


def test_unreadable_video_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is no video")
    with pytest.raises(VideoError, match="cannot open video"):
        list(sample_frames(bad))


def test_link_faces_follows_moving_boxes_and_splits_strangers():
    a = [(0, 0, 10, 10), (1, 0, 11, 10), (2, 0, 12, 10), (3, 0, 13, 10)]
    b = [(50, 50, 60, 60), (50, 51, 60, 61), None, (51, 51, 61, 61)]  # missed once
    frames = [[a[f]] + ([b[f]] if b[f] else []) for f in range(4)]
    ids = link_faces(frames)
    assert [row[0] for row in ids] == [0, 0, 0, 0]
    assert ids[0][1] == ids[1][1] == ids[3][1] == 1  # survives a one-frame gap
    # the same box three frames later is a new face, as is one far away
    assert link_faces([[a[0]], [], [], [a[0]]]) == [[0], [], [], [1]]
    assert link_faces([[a[0]], [(30, 30, 40, 40)]]) == [[0], [1]]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_scan_video_finds_one_track(video, weight_file):
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    from fakespotter.faces.pipeline import FFHQ_LANDMARKS, FaceCropper

    cropper = FaceCropper(112, FFHQ_LANDMARKS * 112, progress=False)
    scores = [0.2, 0.7, 0.9, 0.4, 0.6, 0.1, 0.8, 0.3]
    result = scan_video(video, ScriptedDetector(scores), cropper, fps=4)

    assert result["n_frames"] == 8 and len(result["times"]) == 8
    assert len(result["tracks"]) == 1, result["tracks"]
    track = result["tracks"][0]
    assert track["n_frames"] == 8 and track["p_fake"] == scores
    assert track["start"] == pytest.approx(0.0) and track["end"] == result["times"][-1]
    assert track["mean"] == pytest.approx(np.mean(scores)) and track["max"] == 0.9
    assert track["fraction_fake"] == pytest.approx(4 / 8)
    assert track["label"] == "fake"  # mean 0.5
    # the window slides right, so her face moves left in the frame
    centres = [(b[0] + b[2]) / 2 for b in track["boxes"]]
    assert centres[-1] < centres[0] - 20
    assert 80 < centres[0] < 260
    v = result["video"]
    assert v == {
        "n_faces": 8,
        "n_tracks": 1,
        "n_frames_with_faces": 8,
        "mean": pytest.approx(np.mean(scores)),
        "max": 0.9,
        "fraction_fake": pytest.approx(0.5),
        "label": "fake",
        "fake_ranges": [[0.0, result["times"][-1]]],
    }
    assert result["tracking"] == "position"  # the stand-in gives no embeddings


def test_video_summary_without_faces_and_timeline_plot(video, tmp_path):
    class NoFaces:
        def __call__(self, image):
            return []

    result = scan_video(video, ScriptedDetector([]), NoFaces(), fps=2)
    assert result["n_frames"] == 4 and result["tracks"] == []
    assert result["video"]["label"] is None and result["video"]["n_faces"] == 0
    assert result["video"]["fake_ranges"] == []
    result = scan_video(video, ScriptedEmbedder([], []), NoFaces(), fps=2)
    assert result["tracks"] == [] and result["tracking"] == "identity"
    png = tmp_path / "none.png"
    plot_timeline(result, png)
    assert Image.open(png).size == (800, 320)


def test_timeline_plot_draws_tracks(tmp_path):
    result = {
        "path": "x.mp4",
        "fps": 1.0,
        "times": [0.0, 1.0, 2.0],
        "tracks": [
            {"track": 0, "times": [0.0, 1.0, 2.0], "p_fake": [0.1, 0.2, 0.9], "mean": 0.4},
            {"track": 1, "times": [1.0, 2.0], "p_fake": [0.8, 0.7], "mean": 0.75},
        ],
    }
    png = tmp_path / "timeline.png"
    plot_timeline(result, png)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (320, 800, 3)
    assert (np.abs(pixels.astype(int) - [31, 119, 180]).sum(-1) < 30).sum() > 100  # track 1 line


@pytest.mark.slow
def test_detect_command_scores_a_video_by_track(video, tmp_path, weight_file, tiny_model):
    """`fakespotter detect clip.mp4`: one row per face track, plus a timeline with --report."""
    import json

    from click.testing import CliRunner

    from fakespotter.cli import EXIT_INPUTS_FAILED, main

    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    model = tiny_model
    runner = CliRunner()
    (tmp_path / "clips").mkdir()
    video.rename(tmp_path / "clips" / "pan.mp4")
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video")
    result = runner.invoke(
        main,
        [
            "detect",
            str(tmp_path / "clips"),
            "--model",
            str(model),
            "--format",
            "json",
            "--fps",
            "5",
            "--report",
            str(tmp_path / "timeline"),
        ],
    )
    assert result.exit_code == EXIT_INPUTS_FAILED, result.output  # broken.mp4
    rows = json.loads(result.stdout)
    assert [Path(r["path"]).name for r in rows] == ["broken.mp4", "pan.mp4"]
    assert rows[0]["error"] and rows[0]["p_fake"] is None
    assert rows[1]["face"] == 0 and 0 <= rows[1]["p_fake"] <= 1 and rows[1]["error"] is None
    # one JSON and one PNG per video, named after it (plus a hash of its path, lately)
    [report] = (tmp_path / "timeline").glob("pan*.json")
    timeline = json.loads(report.read_text())
    assert timeline["n_frames"] == 10 and len(timeline["tracks"]) == 1
    assert timeline["tracking"] == "identity"  # a FakeSpotter gives embeddings
    assert report.with_suffix(".png").stat().st_size > 1000


# -- tracking by identity ----------------------------------------------------------------


class ScriptedEmbedder(ScriptedDetector):
    """A stand-in FakeSpotter that also gives face embeddings: the given rows, in order."""

    def __init__(self, scores, embeddings):
        super().__init__(scores)
        self.embeddings = np.asarray(embeddings, dtype=np.float64).reshape(len(scores), 128)

    def predict_proba_and_embed(self, crops):
        start = self.seen
        return self.predict_proba(crops), self.embeddings[start : start + len(crops)]


class ScriptedFace:
    def __init__(self, box):
        self.box = box
        self.crop = np.zeros((8, 8, 3), np.uint8)


class ScriptedCropper:
    """Stands in for a FaceCropper: the given boxes for each sampled frame, in order."""

    def __init__(self, boxes_per_frame):
        self.boxes_per_frame = list(boxes_per_frame)
        self.calls = 0

    def __call__(self, image):
        boxes = self.boxes_per_frame[self.calls]
        self.calls += 1
        return [ScriptedFace(box) for box in boxes]


def write_grey_video(path: Path, n_frames: int) -> Path:
    """A blank clip at VIDEO_FPS: what a scan needs to sample; the faces come from a stand-in."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(n_frames):
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.full((32, 32, 3), 128, np.uint8), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def scene(frames, scores: dict, seed: int = 0):
    """Stand-ins for a scripted clip. ``frames``: per sampled frame a list of (person, box);
    ``scores``: person -> P(fake). Each person has a random 128-d identity; each sighting of
    them a noisy copy (cosine similarity about 0.85 to another sighting; about 0 between
    people, as for a real backbone)."""
    rng = np.random.default_rng(seed)
    people = sorted({person for faces in frames for person, _ in faces})
    identity = {
        p: v / np.linalg.norm(v)
        for p, v in zip(people, rng.normal(size=(len(people), 128)), strict=False)
    }
    p_fake, embeddings = [], []
    for faces in frames:
        for person, _ in faces:
            noise = rng.normal(size=128)
            e = identity[person] + 0.4 * noise / np.linalg.norm(noise)
            embeddings.append(e / np.linalg.norm(e))
            p_fake.append(scores[person])
    cropper = ScriptedCropper([[box for _, box in faces] for faces in frames])
    return cropper, ScriptedEmbedder(p_fake, embeddings), ScriptedDetector(p_fake)


def people_of(result, frames) -> list[list]:
    """For each track, the person seen in each of its frames (by time and box)."""
    times = result["times"]
    who = {
        (times[f], tuple(float(v) for v in box)): person
        for f, faces in enumerate(frames)
        for person, box in faces
    }
    return [
        [who[(t, tuple(b))] for t, b in zip(track["times"], track["boxes"], strict=False)]
        for track in result["tracks"]
    ]


def test_people_one_after_another_in_the_same_place_get_one_track_each(tmp_path):
    """The user trial: 10 people in turn in one place, 5 real then 5 fake, 3 frames each."""
    frames = [[(f // 3, (100 + f % 2, 80, 200 + f % 2, 200))] for f in range(30)]
    scores = {p: (0.1 + 0.02 * p if p < 5 else 0.9 + 0.02 * (p - 5)) for p in range(10)}
    clip = write_grey_video(tmp_path / "ten.mp4", 30)
    cropper, embedder, _ = scene(frames, scores)
    result = scan_video(clip, embedder, cropper, fps=VIDEO_FPS, min_similarity=0.5)

    assert result["tracking"] == "identity"
    assert len(result["tracks"]) == 10
    assert people_of(result, frames) == [[p] * 3 for p in range(10)]
    times = result["times"]
    for p, track in enumerate(result["tracks"]):
        assert track["start"] == times[3 * p] and track["end"] == times[3 * p + 2]
        assert track["label"] == ("real" if p < 5 else "fake")
    v = result["video"]
    assert v["label"] == "fake" and v["n_tracks"] == 10
    # the five fake people follow each other: one range, from the first one's first frame
    assert v["fake_ranges"] == [[times[15], times[29]]]

    # before: box overlap alone made them all one person, with a mean that looked real
    cropper, _, iou_only = scene(frames, scores)
    before = scan_video(clip, iou_only, cropper, fps=VIDEO_FPS)
    assert before["tracking"] == "position" and len(before["tracks"]) == 1


def test_two_people_who_swap_places_keep_their_tracks(tmp_path):
    """A (real) and B (fake) side by side walk past each other: their boxes overlap, then
    each stands where the other stood. Faces come in any order, as a detector gives them."""
    left, right = (10, 10, 30, 30), (40, 10, 60, 30)
    crossing = [((20, 10, 40, 30), (30, 10, 50, 30)), ((30, 10, 50, 30), (20, 10, 40, 30))]
    frames = [[("A", left), ("B", right)]] * 4
    frames += [[("A", a), ("B", b)] for a, b in crossing]
    frames += [[("B", left), ("A", right)]] * 4
    frames = [faces[::-1] if f % 3 == 1 else faces for f, faces in enumerate(frames)]
    scores = {"A": 0.1, "B": 0.95}
    clip = write_grey_video(tmp_path / "swap.mp4", len(frames))
    cropper, embedder, iou_only = scene(frames, scores, seed=1)
    result = scan_video(clip, embedder, cropper, fps=VIDEO_FPS, min_similarity=0.5)

    assert sorted(people_of(result, frames)) == [["A"] * 10, ["B"] * 10]
    a = next(t for t in result["tracks"] if t["p_fake"][0] == 0.1)
    assert a["boxes"][0] == list(left) and a["boxes"][-1] == list(right)
    assert a["label"] == "real" and a["p_fake"] == [0.1] * 10
    assert result["video"]["fake_ranges"] == [[0.0, result["times"][-1]]]  # B: the whole clip

    # box overlap alone follows the boxes, so at the crossing each track takes the other person
    cropper, _, _ = scene(frames, scores, seed=1)
    before = scan_video(clip, iou_only, cropper, fps=VIDEO_FPS)
    assert any(len(set(people)) > 1 for people in people_of(before, frames))


def test_a_person_who_stays_gets_one_track():
    """Drifting box, noisy embeddings and one missed detection: still one person."""
    rng = np.random.default_rng(2)
    person = rng.normal(size=128)
    boxes, embeddings = [], []
    for f in range(20):
        boxes.append([] if f == 7 else [(50 + 2 * f, 40, 150 + 2 * f, 160)])
        noise = rng.normal(size=128)
        e = person / np.linalg.norm(person) + 0.4 * noise / np.linalg.norm(noise)
        embeddings.append([] if f == 7 else [e / np.linalg.norm(e)])
    ids = link_faces(boxes, embeddings=embeddings, min_similarity=0.5)
    assert [row for row in ids if row] == [[0]] * 19
    # a stranger in the same place ends the track and starts another
    stranger = rng.normal(size=128)
    ids = link_faces(
        boxes[:4],
        embeddings=embeddings[:3] + [[stranger / np.linalg.norm(stranger)]],
        min_similarity=0.5,
    )
    assert ids == [[0], [0], [0], [1]]


def test_verdict_is_fake_with_the_time_range_of_the_one_fake_track(tmp_path):
    """A real person all along; a fake one from frame 3 to 6; another real one from frame 5;
    a one-frame face at 0.7 (not confidently fake, yet more likely fake than real: uncertain,
    never "real", issue #27) and one at 0.95 (confidently fake)."""
    boxes = {
        "A": (0, 0, 20, 20),
        "B": (40, 0, 60, 20),
        "C": (80, 0, 100, 20),
        "D": (0, 40, 20, 60),
        "E": (40, 40, 60, 60),
    }
    frames = [
        [("A", boxes["A"])]
        + [
            (p, boxes[p])
            for p, (lo, hi) in {"B": (3, 6), "C": (5, 9), "D": (1, 1), "E": (9, 9)}.items()
            if lo <= f <= hi
        ]
        for f in range(10)
    ]
    scores = {"A": 0.2, "B": 0.8, "C": 0.3, "D": 0.7, "E": 0.95}
    clip = write_grey_video(tmp_path / "one_fake.mp4", 10)
    cropper, embedder, _ = scene(frames, scores, seed=3)
    result = scan_video(clip, embedder, cropper, fps=VIDEO_FPS, min_similarity=0.5)

    times = result["times"]
    labels = {
        people[0]: t["label"]
        for people, t in zip(people_of(result, frames), result["tracks"], strict=False)
    }
    assert labels == {"A": "real", "B": "fake", "C": "real", "D": "uncertain", "E": "fake"}
    v = result["video"]
    assert v["label"] == "fake"
    assert v["fake_ranges"] == [[times[3], times[6]], [times[9], times[9]]]
    assert [t["n_frames"] for t in result["tracks"]] == [10, 1, 4, 5, 1]


def test_confidently_fake_and_merged_ranges():
    assert confidently_fake([0.4, 0.6]) and not confidently_fake([0.4, 0.59])
    assert not confidently_fake([0.7]) and confidently_fake([0.9]) and not confidently_fake([])
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # overlapping and back-to-back spans merge; a sampled frame between two spans keeps them apart
    assert merge_ranges([[4.0, 4.0], [0.0, 2.0], [1.0, 3.0], [6.0, 6.0]], times) == [
        [0.0, 4.0],
        [6.0, 6.0],
    ]
    assert merge_ranges([], times) == []


def test_timeline_labels_use_the_track_numbers_and_shade_fake_ranges(tmp_path):
    """The table shows each track's ``track`` number (its ``face`` column); so does the plot."""
    result = {
        "path": "x.mp4",
        "fps": 1.0,
        "times": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        "tracks": [
            {
                "track": 0,
                "times": [0.0, 1.0, 2.0],
                "p_fake": [0.1, 0.2, 0.1],
                "mean": 0.13,
                "start": 0.0,
                "end": 2.0,
                "label": "real",
            },
            {
                "track": 1,
                "times": [3.0, 4.0, 5.0],
                "p_fake": [0.9, 0.95, 0.9],
                "mean": 0.92,
                "start": 3.0,
                "end": 5.0,
                "label": "fake",
            },
        ],
        "video": {"fake_ranges": [[3.0, 5.0]]},
    }
    png = tmp_path / "timeline.png"
    fig = plot_timeline(result, png)
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["fake", "track 0 (mean 0.13)", "track 1 (mean 0.92)"]

    # the fake range is shaded (red over white), the real part is not; looked up at y = 0.35,
    # where no line runs
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    height = pixels.shape[0]

    def colour(t):
        x, y = fig.axes[0].transData.transform((t, 0.35))
        return pixels[height - int(round(y)), int(round(x))]

    for t in (3.2, 4.5):
        r, g, b = colour(t)
        assert r > g + 20 and r > b + 20, (t, (r, g, b))
    assert (colour(1.5) > 245).all()


def test_track_similarity_by_backbone():
    from types import SimpleNamespace

    from fakespotter.video import DEFAULT_SIMILARITY

    assert track_similarity(SimpleNamespace(backbone="dlib")) == TRACK_SIMILARITY["dlib"]
    loaded = SimpleNamespace(backbone=SimpleNamespace(name="facenet"))  # a loaded Backbone
    assert track_similarity(loaded) == TRACK_SIMILARITY["facenet"]
    # a wrapper that does not say: the shipped model's backbone
    assert track_similarity(ScriptedDetector([])) == DEFAULT_SIMILARITY == TRACK_SIMILARITY["sface"]
    assert track_similarity(SimpleNamespace(backbone="other")) == DEFAULT_SIMILARITY


# -- the real network ----------------------------------------------------------------------


def test_detector_gives_scores_and_embeddings_from_one_pass(tiny_model):
    """predict_proba_and_embed = predict_proba + the network's L2-normalised output, from one
    forward pass, for the full, pruned and embedding variants."""
    import torch

    from fakespotter.detector import FakeSpotter
    from fakespotter.persistence import load_model

    det = load_model(tiny_model)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (5, 150, 150, 3), dtype=np.uint8)
    bb = det.network()
    with torch.inference_mode():
        out = bb.model.eval()(bb.preprocess(X)).numpy()
    plain = out / np.linalg.norm(out, axis=1, keepdims=True)
    bb.taps()  # finding the layers runs the network once, on first use; not counted
    calls = []
    counter = bb.model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))

    try:
        proba, emb = det.predict_proba_and_embed(X)
        assert calls == [5]  # one pass for the batch
        assert np.allclose(proba, det.predict_proba(X), atol=1e-9)
        assert emb.shape == (5, 128) and np.allclose(emb, plain, atol=1e-5)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

        X_fit = np.concatenate([X, rng.integers(0, 256, (5, 150, 150, 3), dtype=np.uint8)])
        blurred = np.stack(
            [np.asarray(Image.fromarray(x).resize((20, 20)).resize((150, 150))) for x in X_fit]
        )
        X_fit, y = np.concatenate([X_fit, blurred]), np.repeat([0, 1], 10)
        for kwargs in ({"variant": "layer", "taps": 3}, {"variant": "embedding"}):
            small = FakeSpotter(backbone=bb, cv=2, **kwargs).fit(X_fit, y)
            calls.clear()
            proba, emb = small.predict_proba_and_embed(X)
            assert calls == [5], kwargs
            assert np.allclose(proba, small.predict_proba(X), atol=1e-9), kwargs
            assert np.allclose(emb, plain, atol=1e-5), kwargs
    finally:
        counter.remove()
    proba, emb = det.predict_proba_and_embed(np.zeros((0, 150, 150, 3), np.uint8))
    assert proba.shape == (0, 2) and len(emb) == 0


def write_faces_video(path: Path, photos: list[Path], frames_each: int, fps: int) -> None:
    """Each photo in turn in the same place, nudged a few pixels each frame."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for photo in photos:
            face = np.asarray(Image.open(photo).convert("RGB").resize((200, 200)))
            for i in range(frames_each):
                frame = np.full((256, 256, 3), 90, np.uint8)
                frame[20 + 3 * i : 220 + 3 * i, 28 + 4 * i : 228 + 4 * i] = face
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny dlib", "shipped sface"])
def test_real_backbone_splits_real_people_in_the_same_place(
    model, faces_dir, tmp_path, weight_file, request
):
    """Four real FFHQ people in turn in the same place, 3 sampled frames each: the network's
    embeddings give one track per person (box overlap alone gives one track)."""
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        weight_file(name)
    from fakespotter.persistence import default_model_path, load_model

    if model == "tiny dlib":
        det = load_model(request.getfixturevalue("tiny_model"))
    else:
        weight_file("sface")
        det = load_model(default_model_path())
    photos = sorted((faces_dir / "test" / "real").glob("ffhq-zoya_*.jpg"))[:4]
    assert len(photos) == 4
    clip = tmp_path / "four.mp4"
    write_faces_video(clip, photos, frames_each=3, fps=4)
    cropper = det.face_cropper()
    result = scan_video(clip, det, cropper, fps=4)

    assert result["tracking"] == "identity" and result["n_frames"] == 12
    assert [t["n_frames"] for t in result["tracks"]] == [3, 3, 3, 3], result["tracks"]
    times = result["times"]
    assert [(t["start"], t["end"]) for t in result["tracks"]] == [
        (times[3 * i], times[3 * i + 2]) for i in range(4)
    ]

    class ScoresOnly:  # what the web server's wrapper exposes today
        def predict_proba(self, crops):
            return det.predict_proba(crops)

    before = scan_video(clip, ScoresOnly(), cropper, fps=4)
    assert before["tracking"] == "position" and len(before["tracks"]) == 1


def test_tracks_are_labelled_at_the_models_operating_point(tmp_path):
    """The same clip under a model whose threshold is 0.85 with an uncertain band from 0.6:
    a track at 0.8 is uncertain (not fake as at 0.5), one at 0.9 fake, one at 0.3 real."""
    boxes = {"A": (0, 0, 20, 20), "B": (40, 0, 60, 20), "C": (80, 0, 100, 20)}
    frames = [[(p, b) for p, b in boxes.items()] for _ in range(4)]
    clip = write_grey_video(tmp_path / "three.mp4", 4)
    cropper, embedder, _ = scene(frames, {"A": 0.3, "B": 0.8, "C": 0.9}, seed=5)
    embedder.operating_point_ = OperatingPoint(0.85, 0.6)
    result = scan_video(clip, embedder, cropper, fps=VIDEO_FPS, min_similarity=0.5)
    labels = [people[0] for people in people_of(result, frames)]
    by_person = dict(zip(labels, (t["label"] for t in result["tracks"]), strict=True))
    assert by_person == {"A": "real", "B": "uncertain", "C": "fake"}
    assert result["threshold"] == 0.85
    assert result["tracks"][labels.index("B")]["fraction_fake"] == 0.0
    assert result["video"]["label"] == "fake"
    assert result["video"]["fraction_fake"] == 1.0  # each frame's highest score (0.9) >= 0.85
    # a single frame at 0.9 passes the one-frame bar only where the threshold allows it
    assert confidently_fake([0.9], 0.85) and not confidently_fake([0.9], 0.95)


def test_a_track_averaging_over_one_half_is_never_labelled_real():
    """Issue #27 (14): a track whose faces average 0.53 under the shipped model's operating
    point (fake from 0.744, band from 0.559) was "real" while its score said 53% GAN-made."""
    from fakespotter.video import track_label

    point = OperatingPoint(0.744, 0.559)
    assert track_label(np.array([0.52, 0.54]), point) == "uncertain"
    assert track_label(np.array([0.40, 0.45]), point) == "real"
    assert track_label(np.array([0.80, 0.90]), point) == "fake"

"""Score the faces of a video, frame by frame, and follow each face through time.

Frames are decoded with PyAV (the ``video`` extra) and sampled at ``fps``. Faces of
consecutive sampled frames are linked into tracks, one per person:

* by identity, when the detector also gives face embeddings (``predict_proba_and_embed``, as
  a FakeSpotter does): a face joins a live track only when its embedding's cosine
  similarity to one of the track's last few embeddings is at least the backbone's
  ``TRACK_SIMILARITY``; pairs are taken best first by similarity plus box overlap (IoU).
  So a new person in the same place starts a new track, and two people who swap places or
  overlap keep their own tracks.
* by box overlap alone (IoU), when the detector only has ``predict_proba``: then two
  people shown one after another in the same place end up in one track.

Summaries (``p`` is a face's calibrated probability of being GAN-made):

The threshold ``t`` is the model's operating point (``operating_point_``: chosen on held-out
photos, or ``--threshold``; 0.5 for a model without one), the same as for photos.

* per track: ``mean`` and ``max`` of its scores, ``fraction_fake`` = share of its frames
  with ``p >= t``; its ``label`` is ``fake`` when the track is *confidently fake*: a mean
  of at least ``t`` over at least ``MIN_FAKE_FRAMES`` (2) sampled frames, or, for a face
  seen in a single sampled frame, a score of at least ``max(t, SINGLE_FRAME_FAKE)`` (0.9).
  One borderline frame (a face half turned away, a missed link) does not make a video fake.
  Otherwise ``uncertain`` when the model has an uncertain band and the mean is in it, else
  ``real``.
* per video: ``mean`` and ``max`` over every face in every sampled frame, ``fraction_fake`` =
  share of the sampled frames with a face whose highest score is at least ``t``; its
  ``label`` is ``fake`` when any track is labelled fake (None when no face was seen), and
  ``fake_ranges`` lists where: ``[start, end]`` in seconds (first and last sampled frame)
  of the fake tracks, merged where they overlap or follow each other with no sampled frame
  between them.

What a photo's row says of a face, a track says of each of its frames, by the same rules
(``detection_scores``, ``face_sizes``, ``novelties``, ``warnings``: the face finder's and the
model's, as ``FakeSpotter.assess`` gives them), and sums up in the row fields: its lowest
``detection_score``, smallest ``face_size``, highest ``novelty``, and a ``warning`` naming each
kind of warning its frames had once, with how many had it (a one-frame track's is a photo's).

A video that could hang or exhaust a scan is refused in one line (``sample_frames``): frames
over the photos' ``--max-pixels``, a frame more than ``MAX_SECONDS`` after the first (a
crafted timestamp), more than ``MAX_DECODED_FRAMES`` frames; so is a model that gives a face
no finite score.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fakespotter.errors import UserError, first_line, install_extra
from fakespotter.faces.io import MAX_PIXELS
from fakespotter.operating_point import OperatingPoint
from fakespotter.rows import FAKE_THRESHOLD, NO_FINITE_SCORE

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv"}
MIN_IOU = 0.3  # below this, two boxes in consecutive sampled frames are different faces
MAX_GAP = 1  # a track survives this many sampled frames without its face (a missed detection)
RECENT = 3  # a face is compared with its track's last few embeddings: pose and light drift
# Same person when the cosine similarity of L2-normalised embeddings is at least this, per
# backbone. Measured by benchmarks/track_threshold.py on 300 photos of ../shared/faces/test
# (150 FFHQ, 150 StyleGAN; one person each), each through MTCNN and alignment as in a video.
# Different people: all 44850 pairs of photos. Same person: each photo against 9 changed
# copies of itself (shifted, zoomed out, JPEG q30, darker, brighter, blurred, tilted 8 deg,
# mirrored, several at once). The threshold is halfway between the different-person 99.9th
# percentile and the same-person 0.5th percentile:
#   sface   different 99.9% 0.477 (max 0.596), same 0.5% 0.769 -> 0.623
#   facenet different 99.9% 0.687 (max 0.859), same 0.5% 0.782 -> 0.734
#   dlib    different 99.9% 0.951 (max 0.972), same 0.5% 0.964 -> 0.957 (its raw output is far
#           from zero-centred: different people median 0.854, so the margin is thin)
# At these, 0.04-0.07% of same-person copies fall below and <= 0.05% of different-person
# pairs reach them. A real video also changes pose and expression, which copies of one
# photo do not: expect more splits of one person than measured here, above all with dlib.
TRACK_SIMILARITY = {"sface": 0.623, "facenet": 0.734, "dlib": 0.957}
# a detector that does not say its backbone (a wrapper): the shipped model's backbone
DEFAULT_SIMILARITY = TRACK_SIMILARITY["sface"]
MIN_FAKE_FRAMES = 2  # a track is confidently fake with a mean >= 0.5 over this many frames...
SINGLE_FRAME_FAKE = 0.9  # ...or, seen in one sampled frame only, with a score this high
# A video is refused when a frame comes more than this after its first one (a crafted
# timestamp; a day is more than any recording we score) or it has more frames than a day at
# 120 fps: decoding is the cost, whatever is sampled.
MAX_SECONDS = 24 * 3600.0
MAX_DECODED_FRAMES = int(MAX_SECONDS) * 120


class VideoError(UserError):
    """A video could not be opened or decoded (one-line reason)."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sample_frames(
    path: str | os.PathLike,
    fps: float = 1.0,
    max_frames: int | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
    max_seconds: float = MAX_SECONDS,
    max_decoded: int = MAX_DECODED_FRAMES,
) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, H x W x 3 uint8 RGB) for one frame every ``1 / fps`` seconds.

    Refused with a one-line VideoError: frames of more than ``max_pixels`` (the photos'
    limit; checked on the stream's header and on each frame before it is converted), a frame
    more than ``max_seconds`` after the first (a crafted timestamp), more than
    ``max_decoded`` frames decoded.
    """
    try:
        import av
    except ImportError:
        raise VideoError(
            f"reading video needs the 'video' extra: {install_extra('video')}"
        ) from None
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    step = 1.0 / fps
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"cannot open video {path}: {_reason(e)}") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels)
        # The decoder itself refuses much bigger frames (a size change mid-stream) before
        # allocating them. With a margin: it counts padded sizes and, for mpeg4, some buffer
        # of ~54k pixels whatever the frame; each frame's own size is checked exactly below.
        decoder_limit = min(max_pixels + (1 << 20), 2**31 - 1)  # FFmpeg's option is an int
        stream.codec_context.options = {"max_pixels": str(decoder_limit)}
        stream.thread_type = "AUTO"
        next_time, taken, index = 0.0, 0, 0
        first: float | None = None
        rate = float(stream.average_rate or 25)
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else index / rate
                index += 1
                if index > max_decoded:
                    raise VideoError(f"video {path} has more than {max_decoded:,} frames")
                first = t if first is None else first
                if not abs(t - first) <= max_seconds:  # NaN too
                    raise VideoError(
                        f"video {path} has a frame at {t:g} s, more than "
                        f"{max_seconds / 3600:g} hours after its first ({first:g} s)"
                    )
                if t + 1e-6 < next_time:
                    continue
                _check_pixels(frame.width, frame.height, max_pixels)
                # threads=1: PyAV caches a reformatter per thread, and swscale's slice
                # threads outlive a finished thread's reformatter until collected, which
                # deadlocks a forked child that collects it (tests/test_video_threads.py)
                yield t, frame.to_ndarray(format="rgb24", threads=1)
                taken += 1
                if max_frames is not None and taken >= max_frames:
                    return
                # the first multiple of step after t, computed: counting up to it one step
                # at a time took minutes for a frame stamped 1e9 s, days for 1e13 s
                next_time = (math.floor((t + 1e-6) / step) + 1) * step
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode video {path}: {_reason(e)}") from None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"video frames too large: {width}x{height} pixels (limit {max_pixels:,}; "
            "--max-pixels raises it)"
        )


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_faces(
    boxes_per_frame: list[list],
    min_iou: float = MIN_IOU,
    max_gap: int = MAX_GAP,
    embeddings: list | None = None,
    min_similarity: float = DEFAULT_SIMILARITY,
) -> list[list[int]]:
    """Track id of every box, matched greedily against each live track.

    Without ``embeddings``: a box and a track are a pair when the box overlaps the track's
    last box by at least ``min_iou``, best overlap first. With ``embeddings`` (per frame, one
    L2-normalised row per box): they are a pair when the box's embedding has a cosine
    similarity of at least ``min_similarity`` to one of the track's last ``RECENT``
    embeddings, wherever the box is (people who swap places), best similarity + overlap
    first (of two similar faces, the one in the track's place wins).

    A box that matches no track starts a new one. A track is live while it was seen within
    the last ``max_gap + 1`` sampled frames.
    """
    last: dict[int, tuple[int, tuple]] = {}  # track id -> (frame index, last box)
    recent: dict[int, list] = {}  # track id -> its last RECENT embeddings
    ids_per_frame: list[list[int]] = []
    next_id = 0
    for f, boxes in enumerate(boxes_per_frame):
        live = [t for t, (seen, _) in last.items() if f - seen <= max_gap + 1]
        pairs = []
        for t in live:
            for j, box in enumerate(boxes):
                overlap = iou(last[t][1], box)
                if embeddings is None:
                    if overlap >= min_iou:
                        pairs.append((overlap, t, j))
                    continue
                e = np.asarray(embeddings[f][j], dtype=np.float64)
                similarity = max(float(e @ r) for r in recent[t])
                if similarity >= min_similarity:  # the same person, by face
                    pairs.append((similarity + overlap, t, j))
        pairs.sort(reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used = set()
        for _, t, j in pairs:
            if t in used or ids[j] is not None:
                continue
            ids[j] = t
            used.add(t)
        frame_ids: list[int] = []
        for j, box in enumerate(boxes):
            tid = ids[j]
            if tid is None:
                tid, next_id = next_id, next_id + 1
            frame_ids.append(tid)
            last[tid] = (f, tuple(box))
            if embeddings is not None:
                seen = recent.get(tid, []) + [np.asarray(embeddings[f][j], np.float64)]
                recent[tid] = seen[-RECENT:]
        ids_per_frame.append(frame_ids)
    return ids_per_frame


def track_similarity(detector) -> float:
    """The same-person threshold for ``detector``'s backbone (``DEFAULT_SIMILARITY`` when it
    does not say which: a wrapper, a stand-in)."""
    backbone = getattr(detector, "backbone", None)
    name = getattr(backbone, "name", backbone)  # a loaded Backbone or a registered name
    return (
        TRACK_SIMILARITY.get(name, DEFAULT_SIMILARITY)
        if isinstance(name, str)
        else DEFAULT_SIMILARITY
    )


def confidently_fake(p, threshold: float = FAKE_THRESHOLD) -> bool:
    """A track's scores -> whether it counts as fake (see the module docstring)."""
    p = np.asarray(p, dtype=np.float64)
    if len(p) >= MIN_FAKE_FRAMES:
        return bool(p.mean() >= threshold)
    return bool(len(p) == 1 and p[0] >= max(threshold, SINGLE_FRAME_FAKE))


def track_label(p, point: OperatingPoint | None = None) -> str:
    """``fake`` (confidently), ``uncertain`` (mean in the model's band) or ``real``, at the
    model's operating ``point`` (0.5 and no band: None)."""
    point = point or OperatingPoint()
    if confidently_fake(p, point.threshold):
        return "fake"
    # a track that is not confidently fake takes the photo label rule on its mean, so a
    # track is "real" only where a face of that score would be (rows.label_for)
    if len(p) and point.label(float(np.mean(p))) != "real":
        return "uncertain"
    return "real"


def merge_ranges(ranges: list, times: list[float]) -> list[list[float]]:
    """[start, end] spans sorted and merged where they overlap or where no sampled time of
    ``times`` lies between one's end and the next one's start (consecutive samples)."""
    merged: list[list[float]] = []
    for start, end in sorted([float(a), float(b)] for a, b in ranges):
        if merged and not any(merged[-1][1] < t < start for t in times):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _summary(p: np.ndarray, threshold: float) -> dict:
    return {
        "mean": float(p.mean()),
        "max": float(p.max()),
        "fraction_fake": float((p >= threshold).mean()),
    }


# what a track keeps per sampled frame of its face
_PER_FRAME = (
    "times", "boxes", "p_fake", "detection_scores", "face_sizes", "novelties", "warnings"
)  # fmt: skip


def _about(face) -> tuple[float | None, int | None, list[str]]:
    """A found face's detection score, size and warnings, rounded as result rows give them
    (None where the cropper does not say: an aligned input, a stand-in)."""
    score = getattr(face, "score", None)
    size = getattr(face, "size", None)
    return (
        None if score is None else round(float(score), 4),
        None if size is None else int(round(size)),
        list(getattr(face, "warnings", [])),
    )


def _face_summary(track: dict, notes: list[list[str]]) -> dict:
    """A track's row fields from its frames: the lowest detection score, the smallest face,
    the highest novelty (None where no frame has one), and its warning from each frame's
    ``notes``: each kind of warning (the text up to its first parenthesis) once, as first
    given, after how many of its frames had it ("2 of 5 frames: small face (41 px; ...)");
    a one-frame track says exactly what a photo of that face says."""
    n = len(notes)
    kinds: dict[str, list] = {}  # kind -> [its first text, frames with it]
    for frame_notes in notes:
        of_frame = {note.split(" (", 1)[0]: note for note in reversed(frame_notes)}
        for kind, note in reversed(of_frame.items()):  # the frame's order, each kind once
            kinds.setdefault(kind, [note, 0])[1] += 1
    parts = [text if n == 1 else f"{k} of {n} frames: {text}" for text, k in kinds.values()]

    def extreme(values: list, pick):
        known = [v for v in values if v is not None]
        return pick(known) if known else None

    return {
        "detection_score": extreme(track["detection_scores"], min),
        "face_size": extreme(track["face_sizes"], min),
        "novelty": extreme(track["novelties"], max),
        "warning": "; ".join(parts) or None,
    }


def scan_video(
    path: str | os.PathLike,
    detector,
    cropper,
    fps: float = 1.0,
    max_frames: int | None = None,
    batch_size: int = 64,
    min_similarity: float | None = None,
    max_pixels: int = MAX_PIXELS,
) -> dict:
    """Sample, find, track and score the faces of one video; see the module docstring.

    ``detector``: anything with ``predict_proba(crops)`` (a fitted FakeSpotter); when it
    also has ``predict_proba_and_embed(crops) -> (proba, embeddings)``, faces are tracked by
    identity (result ``tracking``: ``"identity"``), otherwise by box overlap alone
    (``"position"``). One with ``assess(crops, embed=...)`` (a FakeSpotter) is scored by it,
    so faces carry novelty and its warnings too, from the same forward pass. ``cropper``: a :class:`~fakespotter.faces.pipeline.FaceCropper` for
    its backbone. ``min_similarity``: the same-person threshold; None for the detector's
    backbone's ``TRACK_SIMILARITY``. The labels use the detector's ``operating_point_`` where it
    has one (0.5 and no band otherwise). ``max_pixels``: frames
    above it are refused, as photos are (``sample_frames``).
    """
    point = getattr(detector, "operating_point_", None) or OperatingPoint()
    threshold = point.threshold
    times, boxes_per_frame, crops = [], [], []
    about: list[tuple[float | None, int | None, list[str]]] = []  # per face, as rows say it
    for t, image in sample_frames(path, fps, max_frames, max_pixels=max_pixels):
        faces = cropper(image)
        times.append(t)
        boxes_per_frame.append([tuple(round(float(v), 1) for v in f.box) for f in faces])
        crops += [f.crop for f in faces]
        about += [_about(f) for f in faces]
    assess = getattr(detector, "assess", None)  # a FakeSpotter: novelty and warnings too
    embed = getattr(detector, "predict_proba_and_embed", None)
    p_parts, e_parts = [], []
    novelty_all: list[float | None] = []  # per face
    notes_all: list[str | None] = []  # per face: the detector's novelty warning
    for i in range(0, len(crops), batch_size):
        batch = np.stack(crops[i : i + batch_size])
        novelty, notes = None, None
        if assess is not None:
            found = assess(batch, embed=embed is not None)  # one forward pass for all
            proba = np.column_stack([1 - found["p_fake"], found["p_fake"]])
            e = found.get("embeddings")
            novelty, notes = found.get("novelty"), found.get("warnings")
        elif embed is not None:
            proba, e = embed(batch)  # one forward pass for both
        else:
            proba = detector.predict_proba(batch)
        if embed is not None:
            e_parts.append(np.asarray(e, dtype=np.float64))
        p_parts.append(proba[:, 1])
        novelty_all += [None] * len(batch) if novelty is None else [float(v) for v in novelty]
        notes_all += [None] * len(batch) if notes is None else list(notes)
    p_all = np.concatenate(p_parts) if p_parts else np.zeros(0)
    if not np.all(np.isfinite(p_all)):  # a crafted model: no score means no verdict
        raise VideoError(NO_FINITE_SCORE)

    embeddings_per_frame = None
    if embed is not None:
        e_all = np.concatenate(e_parts) if e_parts else np.zeros((0, 0))
        offsets = np.cumsum([0] + [len(b) for b in boxes_per_frame])
        embeddings_per_frame = [e_all[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=False)]
    if min_similarity is None:
        min_similarity = track_similarity(detector)
    ids_per_frame = link_faces(
        boxes_per_frame, embeddings=embeddings_per_frame, min_similarity=min_similarity
    )
    tracks: dict[int, dict] = {}
    notes_of: dict[int, list[list[str]]] = {}  # track id -> each frame's warnings
    frame_max = np.full(len(times), np.nan)
    k = 0
    for f, (boxes, ids) in enumerate(zip(boxes_per_frame, ids_per_frame, strict=False)):
        for box, tid in zip(boxes, ids, strict=False):
            p = float(p_all[k])
            score, size, crop_notes = about[k]
            novelty_k, note = novelty_all[k], notes_all[k]
            k += 1
            track = tracks.setdefault(tid, {"track": tid, **{key: [] for key in _PER_FRAME}})
            track["times"].append(times[f])
            track["boxes"].append(list(box))
            track["p_fake"].append(p)
            track["detection_scores"].append(score)
            track["face_sizes"].append(size)
            track["novelties"].append(None if novelty_k is None else round(novelty_k, 3))
            frame_notes = [*crop_notes, *([note] if note else [])]
            notes_of.setdefault(tid, []).append(frame_notes)
            # the frame's warning exactly as a photo row of this face gives it
            track["warnings"].append("; ".join(frame_notes) or None)
            frame_max[f] = p if np.isnan(frame_max[f]) else max(frame_max[f], p)

    track_list = []
    for track in tracks.values():
        track_p = np.array(track["p_fake"])
        track.update(
            n_frames=len(track_p),
            start=track["times"][0],
            end=track["times"][-1],
            **_summary(track_p, threshold),
            label=track_label(track_p, point),
            **_face_summary(track, notes_of[track["track"]]),
        )
        track_list.append(track)

    fake_ranges = merge_ranges(
        [[t["start"], t["end"]] for t in track_list if t["label"] == "fake"], times
    )
    video: dict[str, object] = {
        "n_faces": int(len(p_all)),
        "n_tracks": len(track_list),
        "n_frames_with_faces": int(np.sum(~np.isnan(frame_max))),
        "mean": None,
        "max": None,
        "fraction_fake": None,
        "label": None,
        "fake_ranges": fake_ranges,
    }
    if len(p_all):
        seen = frame_max[~np.isnan(frame_max)]
        video.update(
            mean=float(p_all.mean()),
            max=float(p_all.max()),
            fraction_fake=float((seen >= threshold).mean()),
            label="fake" if fake_ranges else "real",
        )
    return {
        "path": str(path),
        "fps": float(fps),
        "n_frames": len(times),
        "threshold": threshold,
        "times": times,
        "tracking": "position" if embed is None else "identity",
        "tracks": track_list,
        "video": video,
    }


def plot_timeline(result: dict, png_path: str | os.PathLike):
    """One line per track: its probability of being GAN-made over time, with the video's
    fake ranges shaded, saved as a PNG; returns the matplotlib Figure.

    Lines are labelled ``track N``, N the track number the result (and the table's ``face``
    column) uses.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.subplots()
    step = 1.0 / result["fps"]
    end = max(result["times"], default=0.0)
    xmax = max(end, step)
    fake_ranges = (result.get("video") or {}).get("fake_ranges")
    if fake_ranges is None:  # a result from before fake_ranges: the fake tracks' spans
        fake_ranges = merge_ranges(
            [[t["start"], t["end"]] for t in result["tracks"] if t.get("label") == "fake"],
            result["times"],
        )
    for i, (start, stop) in enumerate(fake_ranges):
        # half a sampling step either side: the time each sample stands for, so a range of
        # one sampled frame is still visible
        ax.axvspan(
            max(start - step / 2, 0.0),
            min(stop + step / 2, xmax),
            color="tab:red",
            alpha=0.15,
            linewidth=0,
            label="fake" if i == 0 else None,
        )
    for track in result["tracks"]:
        ax.plot(
            track["times"],
            track["p_fake"],
            marker="o",
            markersize=3,
            label=f"track {track['track']} (mean {track['mean']:.2f})",
        )
    ax.axhline(result.get("threshold", FAKE_THRESHOLD), color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, xmax)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(GAN-made)")
    ax.set_title(Path(result["path"]).name)
    if result["tracks"]:
        ax.legend(loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no face found", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(png_path)
    return fig


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason in words, without repeating the file name."""
    line = first_line(exc)
    filename = getattr(exc, "filename", None)
    if filename and line.endswith(f": {filename!r}"):
        line = line[: -len(f": {filename!r}")]
    return line or type(exc).__name__

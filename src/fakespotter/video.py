"""Score the faces of a video, frame by frame, and follow each face through time.

Frames are decoded with PyAV (the ``video`` extra) and sampled at ``fps``. Faces of
consecutive sampled frames are linked into tracks by greedy box overlap (IoU), so a person
who stays on screen gets one track with one score per sampled frame.

Summaries (``p`` is a face's calibrated probability of being GAN-made):

* per track: ``mean`` and ``max`` of its scores, ``fraction_fake`` = share of its frames
  with ``p >= 0.5``; its ``label`` is ``fake`` when the mean is at least 0.5.
* per video: ``mean`` and ``max`` over every face in every sampled frame, ``fraction_fake`` =
  share of the sampled frames with a face whose highest score is at least 0.5; its
  ``label`` is ``fake`` when any track is labelled fake (None when no face was seen).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv"}
MIN_IOU = 0.3  # below this, two boxes in consecutive sampled frames are different faces
MAX_GAP = 1  # a track survives this many sampled frames without its face (a missed detection)


class VideoError(ValueError):
    """A video could not be opened or decoded (one-line reason)."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sample_frames(path: str | os.PathLike, fps: float = 1.0,
                  max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, H x W x 3 uint8 RGB) for one frame every ``1 / fps`` seconds."""
    try:
        import av
    except ImportError:
        raise VideoError("reading video needs the 'video' extra: pip install 'fakespotter[video]'") from None
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    step = 1.0 / fps
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"cannot open video {path}: {_first_line(e)}") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next_time, taken, index = 0.0, 0, 0
        rate = float(stream.average_rate or 25)
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else index / rate
                index += 1
                if t + 1e-6 < next_time:
                    continue
                yield float(t), frame.to_ndarray(format="rgb24")
                taken += 1
                if max_frames is not None and taken >= max_frames:
                    return
                while next_time <= t + 1e-6:
                    next_time += step
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode video {path}: {_first_line(e)}") from None


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_faces(boxes_per_frame: list[list], min_iou: float = MIN_IOU,
               max_gap: int = MAX_GAP) -> list[list[int]]:
    """Track id of every box: greedy IoU matching against each live track's last box.

    Pairs are taken best-overlap first; a box that matches no track starts a new one. A
    track is live while it was seen within the last ``max_gap + 1`` sampled frames.
    """
    last: dict[int, tuple[int, tuple]] = {}  # track id -> (frame index, last box)
    ids_per_frame, next_id = [], 0
    for f, boxes in enumerate(boxes_per_frame):
        live = [t for t, (seen, _) in last.items() if f - seen <= max_gap + 1]
        pairs = sorted(((iou(last[t][1], box), t, j) for t in live for j, box in enumerate(boxes)),
                       reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used = set()
        for overlap, t, j in pairs:
            if overlap < min_iou:
                break
            if t in used or ids[j] is not None:
                continue
            ids[j] = t
            used.add(t)
        for j, box in enumerate(boxes):
            if ids[j] is None:
                ids[j], next_id = next_id, next_id + 1
            last[ids[j]] = (f, tuple(box))
        ids_per_frame.append(ids)
    return ids_per_frame


def _summary(p: np.ndarray) -> dict:
    return {"mean": float(p.mean()), "max": float(p.max()),
            "fraction_fake": float((p >= 0.5).mean())}


def scan_video(path: str | os.PathLike, detector, cropper, fps: float = 1.0,
               max_frames: int | None = None, batch_size: int = 64) -> dict:
    """Sample, find, track and score the faces of one video; see the module docstring.

    ``detector``: anything with ``predict_proba(crops)`` (a fitted FakeSpotter);
    ``cropper``: a :class:`~fakespotter.faces.pipeline.FaceCropper` for its backbone.
    """
    times, boxes_per_frame, crops = [], [], []
    for t, image in sample_frames(path, fps, max_frames):
        faces = cropper(image)
        times.append(t)
        boxes_per_frame.append([tuple(round(float(v), 1) for v in f.box) for f in faces])
        crops += [f.crop for f in faces]
    p_all = np.zeros(0)
    if crops:
        p_all = np.concatenate([detector.predict_proba(np.stack(crops[i:i + batch_size]))[:, 1]
                                for i in range(0, len(crops), batch_size)])

    ids_per_frame = link_faces(boxes_per_frame)
    tracks: dict[int, dict] = {}
    frame_max = np.full(len(times), np.nan)
    k = 0
    for f, (boxes, ids) in enumerate(zip(boxes_per_frame, ids_per_frame)):
        for box, tid in zip(boxes, ids):
            p = float(p_all[k])
            k += 1
            track = tracks.setdefault(tid, {"track": tid, "times": [], "boxes": [], "p_fake": []})
            track["times"].append(times[f])
            track["boxes"].append(list(box))
            track["p_fake"].append(p)
            frame_max[f] = p if np.isnan(frame_max[f]) else max(frame_max[f], p)

    track_list = []
    for track in tracks.values():
        p = np.array(track["p_fake"])
        summary = _summary(p)
        track.update(n_frames=len(p), start=track["times"][0], end=track["times"][-1], **summary,
                     label="fake" if summary["mean"] >= 0.5 else "real")
        track_list.append(track)

    video = {"n_faces": int(len(p_all)), "n_tracks": len(track_list),
             "n_frames_with_faces": int(np.sum(~np.isnan(frame_max))),
             "mean": None, "max": None, "fraction_fake": None, "label": None}
    if len(p_all):
        seen = frame_max[~np.isnan(frame_max)]
        video.update(mean=float(p_all.mean()), max=float(p_all.max()),
                     fraction_fake=float((seen >= 0.5).mean()),
                     label="fake" if any(t["label"] == "fake" for t in track_list) else "real")
    return {"path": str(path), "fps": float(fps), "n_frames": len(times), "times": times,
            "tracks": track_list, "video": video}


def plot_timeline(result: dict, png_path: str | os.PathLike) -> None:
    """One line per track: its probability of being GAN-made over time, saved as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.subplots()
    for track in result["tracks"]:
        ax.plot(track["times"], track["p_fake"], marker="o", markersize=3,
                label=f"face {track['track'] + 1} (mean {track['mean']:.2f})")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(-0.02, 1.02)
    end = max(result["times"], default=0.0)
    ax.set_xlim(0, max(end, 1.0 / result["fps"]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(GAN-made)")
    ax.set_title(Path(result["path"]).name)
    if result["tracks"]:
        ax.legend(loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no face found", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(png_path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

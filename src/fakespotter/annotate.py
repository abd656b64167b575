"""``detect --annotate DIR``: each photo with its face boxes, numbers and scores drawn on it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fakespotter.rows import Row

COLOURS = {
    "fake": (220, 38, 38),
    "real": (22, 163, 74),
    "uncertain": (234, 88, 12),  # orange: the model's band between real and fake
    "flagged": (234, 179, 8),
}


def output_stem(path: str | os.PathLike) -> str:
    """A file-name stem for one input's outputs: its own stem plus a hash of its absolute
    path, so ``a/clip.mp4`` and ``b/clip.mp4`` never write over each other."""
    digest = hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:8]
    return f"{Path(path).stem}-{digest}"


def _font(image_size: tuple[int, int]):
    return ImageFont.load_default(size=max(12, round(min(image_size) / 40)))


def _line(image_size: tuple[int, int]) -> int:
    """Box line width, also the labels' padding."""
    return max(2, round(min(image_size) / 250))


def _label_text(row: Row) -> str:
    return f"{row.face}: {row.label} {row.p_fake:.2f}" + (" !" if row.warning else "")


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_boxes(rows: Sequence[Row], image_size: tuple[int, int]) -> list[tuple[int, ...]]:
    """Where each face row's label goes (x0, y0, x1, y1), in order: inside the image, never
    over another label, over no other face where there is room; above its box if it fits,
    else below, else inside it, else the nearest free place (a crowded photo may have none:
    then above or below its box)."""
    width, height = image_size
    font, pad = _font(image_size), _line(image_size)
    measure = ImageDraw.Draw(Image.new("1", (1, 1)))
    rows = [r for r in rows if r.box is not None]
    boxes = [tuple(int(round(v)) for v in r.box or ()) for r in rows]
    placed: list[tuple[int, ...]] = []
    for i, (x0, y0, _, y1) in enumerate(boxes):
        left, top, right, bottom = measure.textbbox((0, 0), _label_text(rows[i]), font=font)
        w = min(width, int(right - left) + 2 * pad)
        h = min(height, int(bottom - top) + 2 * pad)
        x = min(max(x0, 0), width - w)
        # above its box, below, inside at the top, inside at the bottom: preferred in that
        # order, each a little less than the one before; then shifted, the least first
        anchors = [y for y in (y0 - h, y1, y0, y1 - h) if 0 <= y <= height - h]
        anchors = anchors or [min(max(y0, 0), height - h)]  # a box taller than the image
        ys = set(anchors) | set(range(0, height - h + 1, max(1, h // 2)))
        xs = {x} | set(range(0, width - w + 1, max(1, w // 4)))

        def cost(c: tuple[int, int], anchors=anchors, x=x, h=h) -> float:
            return abs(c[0] - x) + min(abs(c[1] - a) + k * h / 2 for k, a in enumerate(anchors))

        candidates = [(cx, y, cx + w, y + h) for cx, y in sorted(
            ((cx, y) for y in ys for cx in xs), key=cost
        )]  # fmt: skip
        others = boxes[:i] + boxes[i + 1 :]
        spot = next(
            (
                c
                for avoid in (placed + others, placed)
                for c in candidates
                if not any(_overlap(c, o) for o in avoid)
            ),
            candidates[0],
        )
        placed.append(spot)
    return placed


def draw_faces(image: np.ndarray, rows: Sequence[Row]) -> Image.Image:
    """The photo with a box per face row (red fake, green real, yellow when flagged) and its
    label (number, label, P(fake)) where ``label_boxes`` puts it."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    line, font = _line(picture.size), _font(picture.size)
    rows = [r for r in rows if r.box is not None and r.label is not None]
    for row in rows:
        draw.rectangle(tuple(row.box or ()), outline=_colour(row), width=line)
    for row, (x0, y0, x1, y1) in zip(rows, label_boxes(rows, picture.size), strict=True):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=_colour(row))
        left, top, _, _ = draw.textbbox((0, 0), _label_text(row), font=font)
        draw.text((x0 + line - left, y0 + line - top), _label_text(row), fill="white", font=font)
    return picture


def _colour(row: Row) -> tuple[int, int, int]:
    return COLOURS["flagged" if row.warning else str(row.label)]


def write_annotated(image: np.ndarray, rows: Sequence[Row], out_dir: str | os.PathLike) -> Path:
    """Draw ``rows`` on ``image`` and save it as ``out_dir/<output_stem>.jpg``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{output_stem(rows[0].path)}.jpg"
    draw_faces(image, rows).save(target, quality=90)
    return target

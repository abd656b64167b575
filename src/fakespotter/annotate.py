"""``detect --annotate DIR``: each photo with its face boxes, numbers and scores drawn on it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fakespotter.rows import Row

COLOURS = {"fake": (220, 38, 38), "real": (22, 163, 74), "flagged": (234, 179, 8)}


def output_stem(path: str | os.PathLike) -> str:
    """A file-name stem for one input's outputs: its own stem plus a hash of its absolute
    path, so ``a/clip.mp4`` and ``b/clip.mp4`` never write over each other."""
    digest = hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:8]
    return f"{Path(path).stem}-{digest}"


def draw_faces(image: np.ndarray, rows: Sequence[Row]) -> Image.Image:
    """The photo with a box per face row: red fake, green real, yellow when flagged."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(2, round(min(picture.size) / 250))
    font = ImageFont.load_default(size=max(12, round(min(picture.size) / 40)))
    for row in rows:
        if row.box is None or row.label is None:  # rows with a box always have a label
            continue
        colour = COLOURS["flagged" if row.warning else row.label]
        x0, y0, x1, y1 = row.box
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = f"{row.face}: {row.label} {row.p_fake:.2f}" + (" !" if row.warning else "")
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = y0 - (bottom - top) - 2 * width if y0 - (bottom - top) - 2 * width >= 0 else y1 + width
        draw.rectangle(
            (x0, ty, x0 + right - left + 2 * width, ty + bottom - top + 2 * width), fill=colour
        )
        draw.text((x0 + width, ty + width - top), text, fill=(255, 255, 255), font=font)
    return picture


def write_annotated(image: np.ndarray, rows: Sequence[Row], out_dir: str | os.PathLike) -> Path:
    """Draw ``rows`` on ``image`` and save it as ``out_dir/<output_stem>.jpg``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{output_stem(rows[0].path)}.jpg"
    draw_faces(image, rows).save(target, quality=90)
    return target

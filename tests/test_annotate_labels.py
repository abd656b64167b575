"""Issue #27 (22): `detect --annotate` on group photos: every label inside the image, none
over another, and the command says what it wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fakespotter.annotate import COLOURS, draw_faces, label_boxes
from fakespotter.rows import Row

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"


def _rows(boxes, labels=None) -> list[Row]:
    labels = labels or ["fake"] * len(boxes)
    return [
        Row(path="group.jpg", face=i, box=[float(v) for v in b], p_fake=0.5, label=label)
        for i, (b, label) in enumerate(zip(boxes, labels, strict=True))
    ]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


GROUPS = {
    # the trial's photo: 1024 x 300, four faces, at the top and bottom edges
    "four": [(40, 5, 200, 180), (210, 10, 370, 200), (380, 0, 540, 170), (560, 120, 720, 299)],
    # small faces side by side, narrower than their labels, and two in corners
    "row": [(100 + 65 * i, 100, 160 + 65 * i, 160) for i in range(8)]
    + [(0, 0, 60, 60), (964, 240, 1024, 300)],
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_labels_stay_inside_the_image_and_never_overlap(group):
    size = (1024, 300)
    rows = _rows(GROUPS[group])
    boxes = label_boxes(rows, size)
    assert len(boxes) == len(rows)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # each label is near its own face: above, below or inside its box's columns
    for (x0, _, x1, _), (fx0, _, fx1, _) in zip(boxes, GROUPS[group], strict=True):
        assert x0 < fx1 + 40 and x1 > fx0 - 40
    # and drawn where it was placed, in its face's colour
    picture = np.asarray(draw_faces(np.zeros((size[1], size[0], 3), np.uint8), rows))
    for x0, y0, *_ in boxes:
        assert tuple(picture[y0 + 1, x0 + 1]) == COLOURS["fake"]


def test_a_label_goes_above_its_box_where_there_is_room():
    (box,) = label_boxes(_rows([(400, 100, 500, 200)]), (1024, 300))
    assert box[3] == 100 and box[0] == 400  # just above, left-aligned with the box


def test_uncertain_faces_are_drawn_too():
    rows = _rows([(10, 40, 90, 120)], ["uncertain"])
    picture = np.asarray(draw_faces(np.zeros((200, 200, 3), np.uint8), rows))
    assert tuple(picture[40, 50]) == COLOURS["uncertain"]  # its box's top edge


def test_annotate_says_how_many_images_it_wrote(tmp_path, tiny_model):
    from fakespotter.cli import main

    out = tmp_path / "drawn"
    result = CliRunner().invoke(
        main, ["detect", str(ASTRONAUT), "--model", str(tiny_model), "--annotate", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote 1 annotated image to {out}" in result.stderr
    (drawn,) = out.iterdir()
    with Image.open(drawn) as im:
        assert im.size == Image.open(ASTRONAUT).size

"""FaceCropper: aligned inputs skip detection and land on the backbone's template."""

from __future__ import annotations

import numpy as np
import pytest

from fakespotter.backbones import get_backbone
from fakespotter.faces import estimate_similarity
from fakespotter.faces.pipeline import FFHQ_LANDMARKS, FaceCropper


class FaceCheckStub:
    """Stands in for MTCNN where only the aligned input's face check runs."""

    def face_probability(self, image, boxes):
        return np.ones(len(np.reshape(boxes, (-1, 4))))


@pytest.mark.parametrize("name", ["facenet", "dlib", "sface"])
def test_aligned_input_lands_on_the_template(name):
    spec = get_backbone(name)
    side = 256
    image = np.zeros((side, side, 3), np.uint8)
    # a bright 5x5 marker at each canonical FFHQ landmark
    for x, y in FFHQ_LANDMARKS * side:
        image[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = 255
    cropper = FaceCropper(
        spec.input_size, spec.alignment_template, aligned=True, detector=FaceCheckStub()
    )
    (face,) = cropper(image)
    assert face.box == (0.0, 0.0, float(side), float(side)) and face.score is None
    assert face.crop.shape == (spec.input_size, spec.input_size, 3)
    # each marker lands where the least-squares similarity from the FFHQ points to the template
    # puts it (within 1.5 px), and that is near its template point (the shapes differ a little)
    matrix = estimate_similarity(FFHQ_LANDMARKS * side, spec.alignment_template)
    expected = FFHQ_LANDMARKS * side @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(expected - spec.alignment_template).max() < 0.06 * spec.input_size
    for tx, ty in expected:
        x0, y0 = int(tx) - 6, int(ty) - 6
        patch = face.crop[max(y0, 0) : y0 + 13, max(x0, 0) : x0 + 13, 0].astype(float)
        ys, xs = np.mgrid[max(y0, 0) : y0 + 13, max(x0, 0) : x0 + 13]
        cx, cy = (xs * patch).sum() / patch.sum(), (ys * patch).sum() / patch.sum()
        assert abs(cx - tx) < 1.5 and abs(cy - ty) < 1.5, (name, tx, ty, cx, cy)


def test_detected_faces_come_with_boxes(weight_file):
    for stage in ("pnet", "rnet", "onet"):
        weight_file(f"mtcnn_{stage}")
    from pathlib import Path

    from fakespotter.faces import load_image

    spec = get_backbone("sface")
    image = load_image(Path(__file__).parent / "data" / "astronaut.jpg")
    faces = FaceCropper(spec.input_size, spec.alignment_template)(image)
    assert len(faces) == 1 and faces[0].crop.shape == (112, 112, 3)
    assert faces[0].score > 0.9
    assert FaceCropper(112, spec.alignment_template)(np.full((200, 200, 3), 128, np.uint8)) == []


@pytest.mark.slow
def test_worker_processes_give_the_same_faces_in_order(tmp_path):
    """find_faces with workers: same crops and errors as in-process, in input order, and
    never more than IN_FLIGHT_PER_WORKER files per worker ahead of the caller."""
    from PIL import Image

    from fakespotter import photos

    rng = np.random.default_rng(0)
    files = []
    for i in range(40):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (64 + i, 64 + i, 3), dtype=np.uint8)).save(path)
        files.append(path)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    files.insert(7, tmp_path / "broken.png")
    files.insert(20, tmp_path / "missing.png")
    bb = get_backbone("sface")
    cropper = FaceCropper(bb.input_size, bb.alignment_template, aligned=True)

    taken = []

    def lazily():
        for path in files:
            taken.append(path)
            yield path

    serial = list(photos.find_faces(cropper, files))
    parallel = []
    for item in photos.find_faces(cropper, lazily(), workers=1):
        assert len(taken) - len(parallel) <= photos.IN_FLIGHT_PER_WORKER + 1
        parallel.append(item)
    assert [f.path for f in parallel] == files
    for a, b in zip(serial, parallel, strict=False):
        assert a.error == b.error
        assert len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces, strict=False):
            assert np.array_equal(fa.crop, fb.crop)
    assert parallel[7].error and parallel[20].error and not parallel[0].error

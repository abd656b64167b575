"""Similarity estimation and face warping on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from fakespotter.faces.align import (
    estimate_similarity,
    warp_face,
)

# The widely used 5-point template of 112 x 112 face crops (insightface): a realistic
# set of landmarks for the alignment tests.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye (smaller x)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ]
)


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    "scale, angle, tx, ty",
    [(1.0, 0.0, 0.0, 0.0), (2.7, 0.4, 13.0, -8.5), (0.31, -2.5, 100.0, 42.0), (5.0, np.pi, -3, 7)],
)
def test_recovers_known_similarity(scale, angle, tx, ty):
    true = similarity(scale, angle, tx, ty)
    landmarks = apply(true, ARCFACE_TEMPLATE_112)
    recovered = estimate_similarity(ARCFACE_TEMPLATE_112, landmarks)
    assert recovered.shape == (2, 3)
    np.testing.assert_allclose(recovered, true, atol=1e-6)


def test_least_squares_fit_beats_perturbations():
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE_112
    dst = apply(similarity(1.8, 0.2, 5, 9), src) + rng.normal(0, 1.5, src.shape)
    best = estimate_similarity(src, dst)
    best_error = ((apply(best, src) - dst) ** 2).sum()
    for _ in range(50):
        scale, angle = 1.8 * np.exp(rng.normal(0, 0.02)), 0.2 + rng.normal(0, 0.02)
        other = similarity(scale, angle, *best[:, 2] + rng.normal(0, 0.3, 2))
        assert ((apply(other, src) - dst) ** 2).sum() >= best_error


def test_never_reflects():
    mirrored = ARCFACE_TEMPLATE_112 * np.array([-1.0, 1.0])
    matrix = estimate_similarity(ARCFACE_TEMPLATE_112, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    linear = matrix[:, :2]
    # Pure rotation times uniform scale: columns orthogonal and equally long.
    assert abs(linear[:, 0] @ linear[:, 1]) < 1e-9
    assert abs(np.linalg.norm(linear[:, 0]) - np.linalg.norm(linear[:, 1])) < 1e-9


def test_rejects_degenerate_points():
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((5, 3)), np.zeros((5, 3)))


def dot_image(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Black image with a small white square centred on each point."""
    image = np.zeros((height, width, 3), np.uint8)
    for x, y in np.rint(points).astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    return image


def blob_centres(image: np.ndarray, guesses: np.ndarray, radius: int = 8) -> np.ndarray:
    grey = image[..., 0].astype(float)
    centres = []
    for gx, gy in np.rint(guesses).astype(int):
        y0, x0 = max(gy - radius, 0), max(gx - radius, 0)
        window = grey[y0 : gy + radius + 1, x0 : gx + radius + 1]
        ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
        total = window.sum()
        centres.append([(xs * window).sum() / total + x0, (ys * window).sum() / total + y0])
    return np.array(centres)


@pytest.mark.parametrize("scale, angle", [(1.6, 0.3), (0.9, -0.5), (3.0, 0.05)])
def test_warp_puts_landmarks_on_template(scale, angle):
    size = 112
    landmarks = apply(similarity(scale, angle, 150, 120), ARCFACE_TEMPLATE_112 - 56)
    landmarks = np.rint(landmarks)  # dots are drawn on whole pixels
    image = dot_image(landmarks, 300, 320)
    face = warp_face(image, landmarks, ARCFACE_TEMPLATE_112, size)
    assert face.shape == (size, size, 3) and face.dtype == np.uint8
    found = blob_centres(face, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(found, ARCFACE_TEMPLATE_112, atol=1.0)


def test_identity_warp_copies_pixels():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    face = warp_face(image, ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112, 112)
    np.testing.assert_array_equal(face, image)


def test_outside_is_padded_not_stretched():
    image = np.full((100, 100, 3), 200, np.uint8)
    # Put the face centre on the image's top-left corner: the output's top-left is outside.
    landmarks = ARCFACE_TEMPLATE_112 - 56
    face = warp_face(image, landmarks, ARCFACE_TEMPLATE_112, 112, fill=0)
    assert (face[:50, :50] == 0).all()  # padding, not smeared edge pixels
    assert (face[60:, 60:] == 200).all()  # the image itself
    face = warp_face(image, landmarks, ARCFACE_TEMPLATE_112, 112, fill=17)
    assert (face[:50, :50] == 17).all()


def test_face_entirely_outside_gives_fill():
    image = np.full((50, 50, 3), 200, np.uint8)
    face = warp_face(image, ARCFACE_TEMPLATE_112 + 1000, ARCFACE_TEMPLATE_112, 64, fill=5)
    assert (face == 5).all()


def test_big_shrink_is_antialiased():
    # A one-pixel checkerboard shrunk 10x must average out to grey, not alias into stripes.
    ys, xs = np.mgrid[0:1200, 0:1200]
    image = np.repeat((((xs + ys) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    landmarks = apply(similarity(10.0, 0.1, 600, 600), ARCFACE_TEMPLATE_112 - 56)
    face = warp_face(image, landmarks, ARCFACE_TEMPLATE_112, 112)[16:-16, 16:-16]  # inside
    assert abs(face.mean() - 127.5) < 3
    assert face.std() < 6

"""load_image: every kind of input gives an RGB uint8 array or an ImageError with a reason."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakespotter.faces.io import MAX_BYTES, MAX_PIXELS, ImageError, load_image


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)
    assert array.flags.writeable


def close(pixel, expected, tolerance=3) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(expected)) <= tolerance))


def test_every_reader_takes_the_module_limits_by_default():
    """One home for the size limits: the readers' defaults are the module's constants (issue
    #30: this test used to compare the constants with their own literals)."""
    import inspect

    from fakespotter.faces.io import load_image_bytes

    for reader in (load_image, load_image_bytes):
        params = inspect.signature(reader).parameters
        assert params["max_pixels"].default == MAX_PIXELS, reader
        assert params["max_bytes"].default == MAX_BYTES, reader
    assert issubclass(ImageError, ValueError)  # callers may catch it as a bad value


def test_rgb_jpeg(tmp_path: Path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (30, 20), (10, 200, 30)).save(path, quality=95)
    array = load_image(path)
    assert_rgb(array, 20, 30)
    assert close(array[10, 15], (10, 200, 30), 4)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path):
    path = tmp_path / "g.png"
    Image.new("L", (8, 6), 77).save(path)
    array = load_image(str(path))
    assert_rgb(array, 6, 8)
    assert (array == 77).all()


def test_one_bit_image(tmp_path: Path):
    path = tmp_path / "b.png"
    image = Image.new("1", (8, 8), 0)
    image.putpixel((3, 3), 1)
    image.save(path)
    array = load_image(path)
    assert_rgb(array, 8, 8)
    assert (array[3, 3] == 255).all() and (array[0, 0] == 0).all()


def test_cmyk_jpeg(tmp_path: Path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red
    array = load_image(path)
    assert_rgb(array, 16, 16)
    assert close(array[8, 8], (255, 0, 0), 6)


def test_rgba_is_composited_on_white(tmp_path: Path):
    path = tmp_path / "t.png"
    rgba = np.zeros((4, 6, 4), np.uint8)  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[1, 1] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(rgba).save(path)
    array = load_image(path)
    assert_rgb(array, 4, 6)
    assert close(array[0, 0], (255, 0, 0), 0)
    assert close(array[3, 5], (255, 255, 255), 0)
    assert close(array[1, 1], (127, 127, 127), 1)


def test_la_is_composited_on_white(tmp_path: Path):
    path = tmp_path / "la.png"
    Image.new("LA", (5, 5), (0, 0)).save(path)
    assert (load_image(path) == 255).all()


def test_palette_and_palette_with_transparency(tmp_path: Path):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    image.putpixel((2, 2), 1)
    plain = tmp_path / "p.png"
    image.save(plain)
    array = load_image(plain)
    assert_rgb(array, 10, 10)
    assert close(array[0, 0], (0, 0, 255), 0) and close(array[2, 2], (0, 255, 0), 0)

    transparent = tmp_path / "pt.png"
    image.save(transparent, transparency=0)
    array = load_image(transparent)
    assert close(array[0, 0], (255, 255, 255), 0) and close(array[2, 2], (0, 255, 0), 0)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path):
    path = tmp_path / "16.png"
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    array = load_image(path)
    assert_rgb(array, 1, 4)
    assert array[0, :, 0].tolist() == [0, 128, 255, 4]


def test_exif_orientation_is_applied(tmp_path: Path):
    path = tmp_path / "rotated.jpg"
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(path, exif=exif, quality=95)
    array = load_image(path)
    assert_rgb(array, 40, 20)  # portrait after rotation
    assert close(array[5, 10], (255, 0, 0), 8)  # the left half is now on top
    assert close(array[35, 10], (0, 0, 255), 8)


def test_animated_gif_gives_first_frame(tmp_path: Path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    array = load_image(path)
    assert_rgb(array, 12, 12)
    assert close(array[6, 6], (255, 0, 0), 2)


def test_animated_webp_gives_first_frame(tmp_path: Path):
    path = tmp_path / "anim.webp"
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    try:
        frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    except (OSError, ValueError, KeyError):
        pytest.skip("Pillow built without WebP")
    array = load_image(path)
    assert close(array[6, 6], (255, 0, 0), 2)


def expect_error(path, *words: str, **limits) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path, **limits)
    reason = str(info.value)
    assert reason == info.value.reason
    assert "\n" not in reason and 0 < len(reason) < 120
    assert any(word in reason for word in words), reason
    return info.value


def test_missing_file(tmp_path: Path):
    expect_error(tmp_path / "nope.jpg", "not found")


def test_directory(tmp_path: Path):
    expect_error(tmp_path, "directory")


def test_zero_bytes(tmp_path: Path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    expect_error(path, "empty")


def test_text_file_named_jpg(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 10)
    expect_error(path, "not an image")


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_truncated_file(tmp_path: Path, suffix: str):
    path = tmp_path / f"cut.{suffix}"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated", "corrupt")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_permission_denied(tmp_path: Path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    expect_error(path, "permission")


def test_file_size_limit(tmp_path: Path):
    path = tmp_path / "big.png"
    Image.new("RGB", (50, 50)).save(path)
    expect_error(path, "too large", max_bytes=10)


def write_png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG that claims a huge size (a classic decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    rows = zlib.compress(b"\x00" * (width + 1) * 2)  # only two rows of data
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    path.write_bytes(png)


def test_too_many_pixels_checked_before_decoding(tmp_path: Path):
    path = tmp_path / "bomb.png"
    write_png_header_only(path, 8000, 7000)  # 56 M pixels, a few hundred bytes on disk
    assert path.stat().st_size < 10_000
    expect_error(path, "too large")


def test_pillow_bomb_warning_and_error_become_image_errors(tmp_path: Path):
    warn_size = tmp_path / "warn.png"
    write_png_header_only(warn_size, 10_000, 10_000)  # over Pillow's warning limit
    expect_error(warn_size, "too large", max_pixels=10**12)
    error_size = tmp_path / "huge.png"
    write_png_header_only(error_size, 20_000, 20_000)  # over Pillow's hard limit
    expect_error(error_size, "too large", max_pixels=10**12)


def test_pixel_limit_argument(tmp_path: Path):
    path = tmp_path / "img.png"
    Image.new("RGB", (100, 100)).save(path)
    expect_error(path, "too large", max_pixels=9_999)
    assert_rgb(load_image(path, max_pixels=10_000), 100, 100)

"""A corpus of hostile and odd input files, written on demand into a folder (never committed).

``write_corpus(folder)`` returns one ``Case`` per entry: its path and what loading it should
give: ``OK`` (an RGB array), a substring of the one-line reason, or ``EITHER`` (depends on
who runs the tests, e.g. an unreadable file is readable for root).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

OK = "ok"
EITHER = "either"
MAX_BYTES_IN_TESTS = 2_000_000  # the corpus's "oversized" file is just over this


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    expect: str  # OK, EITHER, or a substring of the error
    note: str = ""


def face_like(size: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def encoded(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A valid 1-bit grayscale PNG of side x side black pixels: kilobytes on disk, and
    side * side pixels once decoded. Compressed row by row, never held whole in memory."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(side)]
    data = b"".join(parts) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def exif_rotated_jpeg() -> bytes:
    im = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return encoded(im, "JPEG", exif=exif.tobytes())


def animation(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def write_corpus(folder: Path) -> list[Case]:
    """Write every hostile case into ``folder`` (created) and describe what each should give."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, data: bytes | None, expect: str, note: str = "") -> Path:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        cases.append(Case(name, path, expect, note))
        return path

    jpeg = encoded(face_like(), "JPEG", quality=90)
    png = encoded(face_like(), "PNG")
    add("zero_bytes.jpg", b"", "empty file (0 bytes)", "an empty file")
    add("truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt or truncated image", "JPEG cut in half")
    add("truncated.png", png[: len(png) // 2], "corrupt or truncated image", "PNG cut in half")
    add(
        "text_named.jpg",
        b"this is a text file, not a photo\n" * 20,
        "not an image",
        "a text file named .jpg",
    )
    add("png_named.jpg", png, OK, "a PNG with a .jpg name is read by its content")
    add(
        "bomb_30000x30000.png",
        png_bomb(30000),
        "image too large",
        "decompression bomb: 110 KB file, 900 M pixels (over Pillow's own limit)",
    )
    add(
        "bomb_8000x8000.png",
        png_bomb(8000),
        "image too large: 8000x8000 pixels",
        "decompression bomb: 8 KB file, 64 M pixels",
    )
    add(
        "oversized.png",
        os.urandom(MAX_BYTES_IN_TESTS + 1),
        "file too large",
        "one byte over --max-bytes",
    )
    add("one_pixel.png", encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), OK, "a 1x1 image")
    add("strip_1x500.png", encoded(Image.new("RGB", (1, 500)), "PNG"), OK, "a 1 pixel wide strip")
    add("grayscale.jpg", encoded(face_like().convert("L"), "JPEG"), OK, "8-bit grey")
    add("cmyk.jpg", encoded(face_like().convert("CMYK"), "JPEG"), OK, "CMYK JPEG")
    add("rgba.png", encoded(face_like().convert("RGBA"), "PNG"), OK, "RGBA (composited on white)")
    add("palette.png", encoded(face_like().convert("P"), "PNG"), OK, "palette PNG")
    sixteen = Image.fromarray(np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64))
    add("sixteen_bit.png", encoded(sixteen, "PNG"), OK, "16-bit grey (scaled to 8 bits)")
    add("animated.gif", animation("GIF"), OK, "animated GIF (first frame)")
    add("animated.webp", animation("WEBP"), OK, "animated WebP (first frame)")
    add("exif_rotated.jpg", exif_rotated_jpeg(), OK, "EXIF orientation 6 (turned upright)")
    add('new\nline, "quoted".png', png, OK, "newline, comma and quotes in the name")
    locked = add("no_permission.jpg", jpeg, EITHER, "chmod 000: readable for root only")
    locked.chmod(0)
    fifo = folder / "fifo.jpg"
    os.mkfifo(fifo)  # root cannot read it as a file either; opening it would block forever
    cases.append(Case("fifo.jpg", fifo, "not a regular file", "a FIFO (unreadable even for root)"))
    os.symlink(folder / "absent.jpg", folder / "broken_link.jpg")
    cases.append(
        Case(
            "broken_link.jpg", folder / "broken_link.jpg", "file not found", "a symlink to nothing"
        )
    )
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    cases.append(Case("loop.jpg", folder / "loop.jpg", "cannot access file", "a symlink to itself"))
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9_latin1.png"))
    odd.write_bytes(png)
    cases.append(Case("caf\\xe9_latin1.png", odd, OK, "a Latin-1 (not UTF-8) file name"))
    return cases


def restore_permissions(cases: list[Case]) -> None:
    """Let pytest's tmp_path clean-up remove the locked file."""
    for case in cases:
        if case.path.is_file() and not case.path.is_symlink():
            case.path.chmod(stat.S_IRUSR | stat.S_IWUSR)

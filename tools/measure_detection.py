"""Measure how often MTCNN finds a face in a folder of images, and how fast.

python tools/measure_detection.py ../shared/faces/wild/real
python tools/measure_detection.py ../shared/faces/test/fake --limit 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fakespotter.faces import MTCNN, ImageError, load_image

ROOT = Path(__file__).resolve().parents[1]  # the repository
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
WEIGHTS = Path.home() / ".cache" / "fakespotter" / "mtcnn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", nargs="?", default=ROOT.parent / "shared" / "faces" / "wild" / "real", type=Path
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="N files evenly spread over the sorted list"
    )
    parser.add_argument("--no-retry", action="store_true", help="disable the padded retry")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if args.limit and args.limit < len(files):
        step = len(files) / args.limit  # spread out: names are grouped by source
        files = [files[int(i * step)] for i in range(args.limit)]
    detector = MTCNN.from_files(
        args.weights / "pnet.pt",
        args.weights / "rnet.pt",
        args.weights / "onet.pt",
        retry_padded=not args.no_retry,
    )
    detector.detect(load_image(files[0]))  # warm-up, not timed

    misses, unreadable, multiple = [], [], 0
    seconds = 0.0
    sizes: dict[str, list[float]] = {}  # "WxH" -> detect seconds per image
    for path in tqdm(files, unit="img"):
        try:
            image = load_image(path)
        except ImageError as error:
            unreadable.append(f"{path.name}: {error}")
            continue
        start = time.perf_counter()
        faces = detector.detect(image)
        elapsed = time.perf_counter() - start
        seconds += elapsed
        sizes.setdefault(f"{image.shape[1]}x{image.shape[0]}", []).append(elapsed)
        if not faces:
            misses.append(path.name)
        multiple += len(faces) > 1

    readable = len(files) - len(unreadable)
    found = readable - len(misses)
    print(f"folder:            {args.folder}")
    for size, times in sorted(sizes.items()):
        print(f"  {size}: {len(times)} images, {1000 * sum(times) / len(times):.1f} ms/image")
    print(f"images:            {len(files)} ({len(unreadable)} unreadable)")
    print(f"with >= 1 face:    {found}")
    print(f"detection rate:    {found / max(readable, 1):.2%}")
    print(f"with > 1 face:     {multiple}")
    print(
        f"detect ms/image:   {1000 * seconds / max(readable, 1):.1f} "
        f"(decode excluded, torch threads {torch.get_num_threads()})"
    )
    print(f"misses ({len(misses)}): {' '.join(misses)}")
    for line in unreadable:
        print(f"unreadable: {line}")


if __name__ == "__main__":
    main()

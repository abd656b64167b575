"""Speed of fakespotter on this machine: backbone forward vs coverage features, and `detect`.

Per backbone (all in one process, runs interleaved so machine noise hits every measurement
alike, median of --reps after a warm-up), in ms/image at batch 32 and batch 1:

* plain: ``model(preprocess(crops))`` under ``torch.inference_mode`` (torch eager);
* coverage: ``FakeSpotter.transform(crops)``, the detector's own feature path
  (NeuronCoverage over every tap, raw neurons), for variants ``channel``, ``layer`` and
  ``kmultisection-channel``, each counted by both engines of ``fakespotter.counting`` (the
  one-pass C kernel and torch's compare-and-sum);
* fit: ``FakeSpotter.fit_thresholds(crops)``, the threshold pass (NeuronCoverage.fit).

End to end, the path ``fakespotter detect`` takes (``photos.iter_files`` -> ``find_faces`` with a
``FaceCropper`` -> ``score_rows`` with a detector), with and without ``--aligned``, on N photos
from ../shared/faces/{test,wild} (or astronaut copies with random crops when that is absent):
images/s, faces/s, and resident memory at N/2 and N images (flat means no leak).

    PYTHONPATH=src python -m benchmarks.speed [--json] [--quick] [--n 1000] [--threads T]
                                              [--backbones facenet,dlib,sface] [--reps 7]

Busy machine (``--busy``, the default; ``--no-busy`` skips it): the ``detect`` run again while
another process spins on one core, as when a laptop does other work. Start-up: ``fakespotter detect`` on one photo as a new
process, from a warm cache (best of three wall times; the first call warms the disk cache).

Progress goes to stderr, results to stdout. ``--json`` prints
``{"<backbone>": {"batch": 32, "plain_ms", "coverage_ms", "ratio", ..., "batch1": {...}},
"end_to_end": {"model", "n", "detect": {...}, "aligned": {...}, "busy_detect": {...},
"detect_faces_per_s", "aligned_faces_per_s", "busy_detect_faces_per_s", "single_photo_s",
"network_alone": {"plain_faces_per_s", "coverage_faces_per_s", ...}}; each mode's row has
``of_network_alone``, its faces/s over the same run's coverage alone),
"detectors": {"<face detector>": {"ms_per_photo", "found_rate", ...}}, "machine": {...}}``
(``busy_*`` not with --no-busy; ``detect_<face detector>``: detect with another registered face
detector than the model's);
``coverage_ms``/``ratio`` are for the ``channel`` variant, ``layer_ms``/``layer_ratio`` for
``layer``, ``default_variant_*`` for the shipped default's ``kmultisection-channel``, each
counted by the machine's engine (``machine.counting``: the C kernel where it builds);
``variants`` has every variant by both engines (``kernel_ms``, ``torch_ms``, ...).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# as `fakespotter` (the command line) sets it, before torch is imported: idle OpenMP threads sleep
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fakespotter.backbones import BACKBONES as REGISTERED
from fakespotter.backbones import backbones_with_weights, get_backbone
from fakespotter.counting import Counter
from fakespotter.counting import engine as counting_engine
from fakespotter.detector import FakeSpotter
from fakespotter.faces.registry import FACE_DETECTORS

ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = ROOT.parent / "shared" / "faces"
ASTRONAUT = ROOT / "tests" / "data" / "astronaut.jpg"
BACKBONES = tuple(REGISTERED)  # every registered backbone, in registration order
VARIANTS = ("channel", "layer", "kmultisection-channel")  # the last: the shipped default's
ENGINES = ("kernel", "torch")  # fakespotter.counting: the one-pass C kernel, and torch's ops
PLAIN_STEPS = (4, 8, 16)
# the end-to-end runs: detect_<name> finds the faces with another registered face detector
# than the model's
MODES = (
    "detect",
    *(f"detect_{name}" for name in FACE_DETECTORS),
    "aligned",  # the CLI's default: no face-finding worker for aligned crops
    "aligned_one_worker",  # what the default was before: the rule's evidence
    "busy_detect",
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- per-backbone micro-benchmarks -----------------------------------------------------------


def random_crops(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth-ish uint8 crops: speed does not depend on content, but keep activations varied."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, 1), 8, 2)[:, :size, :size]


def backbone_runs(name: str, batches: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    """name/measure/batch -> a zero-argument run; all share one loaded network."""
    bb = get_backbone(name).load(progress=False)
    crops = random_crops(max(batches), bb.input_size, seed=0)
    detectors = {}
    for variant in VARIANTS:
        for engine in ENGINES:
            det = FakeSpotter(backbone=bb, variant=variant, neuron="raw")  # its own batch size
            det.fit_thresholds(crops)  # thresholds from the same crops; only the speed matters
            det.features_.extractor().counter = Counter(engine)  # counts the same either way
            detectors[f"{variant}@{engine}"] = det

    def plain(x: np.ndarray, step: int | None = None) -> Callable[[], object]:
        """The forward pass alone, over ``x`` in chunks of ``step`` (default: all at once)."""
        step = step or len(x)

        def run():
            with torch.inference_mode():
                model = bb.model.eval()
                return [model(bb.preprocess(x[i : i + step])) for i in range(0, len(x), step)]

        return run

    # The pruned extractor: channel counts of the first half of the taps only; the forward
    # pass stops after the last of them.
    pruned = FakeSpotter(backbone=bb, variant="channel", neuron="raw", taps=len(bb.taps()) // 2)
    pruned.fit_thresholds(crops)
    detectors["pruned"] = pruned  # the machine's engine, as the channel row's

    runs: dict[str, Callable[[], object]] = {}
    for b in batches:
        x = crops[:b]
        runs[f"{name}/plain/{b}"] = plain(x)
        for step in PLAIN_STEPS:
            if step < b:  # the same images in smaller forward passes: sometimes faster per image
                runs[f"{name}/plain_step{step}/{b}"] = plain(x, step)
        for variant, det in detectors.items():
            runs[f"{name}/{variant}/{b}"] = lambda det=det, x=x: det.transform(x)
    # Counting alone, outside the forward pass: every tap's output of one forward batch,
    # counted against the default variant's four thresholds per tap by each engine
    kmc = detectors[f"{VARIANTS[-1]}@kernel"].features_.extractor()
    outputs = tapped_outputs(kmc, bb.preprocess(crops[: bb.batch_size]))
    for engine in ENGINES:
        counter = Counter(engine)

        def count(counter=counter) -> None:
            for (tap, out), params in zip(outputs, kmc.thresholds_, strict=True):
                counter.counts(out, tap.channel_dim, params)

        runs[f"{name}/count@{engine}/{bb.batch_size}"] = count
    b = max(batches)
    fitter = FakeSpotter(backbone=bb, variant="channel", neuron="raw")
    runs[f"{name}/fit/{b}"] = lambda: fitter.fit_thresholds(crops[:b])
    return runs


def tapped_outputs(coverage, x: torch.Tensor) -> list[tuple]:
    """(tap, a copy of its output) for every tap of ``coverage``, from one forward of ``x``."""
    from fakespotter.taps import forward_hooks

    modules = dict(coverage.model.named_modules())
    kept: dict[str, torch.Tensor] = {}
    hooks = {
        modules[t.name]: (lambda m, i, o, name=t.name: kept.setdefault(name, o.clone()))
        for t in coverage.taps
    }
    with forward_hooks(hooks), torch.inference_mode():
        coverage.model.eval()(x)
    return [(t, kept[t.name]) for t in coverage.taps]


def time_runs(runs: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each run, interleaved: rep 1 of all, then rep 2 of all, ..."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {key: [] for key in runs}
    for rep in range(reps):
        log(f"  rep {rep + 1}/{reps}")
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(ts) for key, ts in times.items()}


def backbone_results(medians: dict[str, float], name: str, batches: tuple[int, ...]) -> dict:
    n_taps = len(get_backbone(name).untrained().taps())

    def at(b: int) -> dict:
        def per_image(run: str) -> float:
            return medians[f"{name}/{run}/{b}"] * 1000 / b

        # torch eager is the runtime fakespotter's networks run in; its fastest way through
        # the b images (one pass, or passes of PLAIN_STEPS images) is the plain forward to beat
        plain = {"torch_eager": per_image("plain")}
        plain |= {f"torch_eager_in_{s}s": per_image(f"plain_step{s}") for s in PLAIN_STEPS if s < b}
        fastest = min(plain.values())
        variants = {
            variant: {
                f"{e}_{key}": value
                for e in ENGINES
                for key, value in (
                    ("ms", per_image(f"{variant}@{e}")),
                    ("ratio", per_image(f"{variant}@{e}") / fastest),
                )
            }
            for variant in VARIANTS
        }
        used = Counter().uses  # what the machine's default engine counts with
        return {
            "batch": b,
            "plain_ms": fastest,
            "plain_runtimes_ms": plain,
            "coverage_ms": variants["channel"][f"{used}_ms"],
            "ratio": variants["channel"][f"{used}_ratio"],
            "layer_ms": variants["layer"][f"{used}_ms"],
            "layer_ratio": variants["layer"][f"{used}_ratio"],
            "default_variant_ms": variants[VARIANTS[-1]][f"{used}_ms"],
            "default_variant_ratio": variants[VARIANTS[-1]][f"{used}_ratio"],
            "variants": variants,
            "pruned_ms": per_image("pruned"),
            "pruned_taps": f"{n_taps // 2} of {n_taps}",
            "pruned_speedup": variants["channel"][f"{used}_ms"] / per_image("pruned"),
        }

    big = max(batches)
    result = at(big)
    step = get_backbone(name).batch_size
    result["counting_alone_ms"] = {  # per image, outside the forward pass
        e: medians[f"{name}/count@{e}/{step}"] * 1000 / step for e in ENGINES
    }
    result["counting_alone_speedup"] = (
        result["counting_alone_ms"]["torch"] / result["counting_alone_ms"]["kernel"]
    )
    fit_ms = medians[f"{name}/fit/{big}"] * 1000 / big
    result["fit_ms"] = fit_ms
    result["fit_ratio"] = fit_ms / result["coverage_ms"]  # threshold pass vs one extraction pass
    for b in batches:
        if b != big:
            result[f"batch{b}"] = at(b)
    return result


# -- end to end --------------------------------------------------------------------------------


def photo_files(n: int, images: Path | None, synthetic: bool, tmp: Path) -> tuple[list[Path], str]:
    """N photo paths and where they came from."""
    from fakespotter.photos import iter_files

    if images is not None:
        files = list(iter_files([images]))[:n]
        return files, str(images)
    folders = [
        FACES_DIR / "test" / "real",
        FACES_DIR / "test" / "fake",
        FACES_DIR / "wild" / "real",
    ]
    if not synthetic and all(f.is_dir() for f in folders):
        pools = [list(iter_files([f])) for f in folders]
        files = []
        for i in range(max(map(len, pools))):  # round-robin: a mix of sizes and sources
            files += [pool[i] for pool in pools if i < len(pool)]
        return files[:n], "shared/faces test/real, test/fake, wild/real (round-robin)"
    return synthetic_photos(n, tmp), "tests/data/astronaut.jpg copies, random crops"


def aligned_faces(n: int, synthetic: bool, tmp: Path) -> tuple[list[Path], str]:
    """N aligned 256 px face photos: shared/faces test images of that size (FFHQ-aligned
    real and StyleGAN faces), repeated as needed; 256 px astronaut crops when absent."""
    import csv

    manifest = FACES_DIR / "manifest.csv"
    if not synthetic and manifest.exists():
        with open(manifest, newline="") as f:
            pool = [
                FACES_DIR / r["file"]
                for r in csv.DictReader(f)
                if r["split"] == "test" and r["width"] == "256" and r["height"] == "256"
            ]
        if pool:
            return [
                pool[i % len(pool)] for i in range(n)
            ], f"shared/faces test, the {len(pool)} aligned 256 px images, repeated"
    files = synthetic_photos(n, tmp, size=256)
    return files, "tests/data/astronaut.jpg copies, random crops resized to 256 px"


def synthetic_photos(n: int, folder: Path, size: int | None = None) -> list[Path]:
    """Copies of the astronaut photo with small random crops (her face stays inside)."""
    from PIL import Image

    image = Image.open(ASTRONAUT).convert("RGB")
    w, h = image.size
    rng = random.Random(0)
    files = []
    for i in range(n):
        x0, y0 = rng.randint(0, 40), rng.randint(0, 40)
        side = min(w - x0, h - y0) - rng.randint(0, 40)
        path = folder / f"astronaut_{size or 0}_{i:05d}.jpg"
        crop = image.crop((x0, y0, x0 + side, y0 + side))
        if size:
            crop = crop.resize((size, size), Image.Resampling.LANCZOS)
        crop.save(path, quality=90)
        files.append(path)
    return files


def throwaway_model(backbone: str) -> FakeSpotter:
    """A detector fit on a few generated crops: speed does not depend on accuracy."""
    bb = get_backbone(backbone).load(progress=False)
    crops = random_crops(16, bb.input_size, seed=1)
    labels = np.arange(16) % 2
    return FakeSpotter(backbone=backbone, variant="channel", cv=2, Cs=(1e-3,)).fit(crops, labels)


def pick_model(backbones: Iterable[str]) -> tuple[FakeSpotter, str]:
    """The shipped default model if its backbone is being measured, else a throwaway one."""
    from fakespotter.persistence import default_model_path, load_model

    backbones = list(backbones)
    try:
        det = load_model(default_model_path())
        if det.network().name in backbones:
            return det, f"shipped default ({det.network().name}, {det.variant})"
    except FileNotFoundError:
        pass
    return throwaway_model(
        backbones[0]
    ), f"throwaway ({backbones[0]}, channel, fit on 16 random crops)"


def counted(items: Iterable, on_half: Callable[[], None], n: int) -> Iterator:
    """Pass ``items`` through, calling ``on_half`` once after n/2 of them."""
    for i, item in enumerate(items, 1):
        yield item
        if i == n // 2:
            on_half()


def detect_run(
    det: FakeSpotter,
    files: list[Path],
    aligned: bool,
    workers: int | None,
    face_detector: str | None = None,
) -> dict:
    """One `fakespotter detect` over ``files``, through the library path the CLI uses;
    ``workers=None``: as many face-finding workers as the CLI would start. Faces are found
    by the model's face detector, or by ``face_detector``."""
    from fakespotter.faces.pipeline import FaceCropper
    from fakespotter.photos import default_workers, find_faces, iter_files, score_rows

    workers = default_workers(len(files), aligned) if workers is None else workers
    bb = det.network()
    cropper = FaceCropper(
        bb.input_size,
        bb.alignment_template,
        aligned=aligned,
        detector=face_detector or det.face_detector,
        progress=False,
    )
    half: dict[str, float] = {}
    gc.collect()
    rss_start = rss_mb()
    start = time.perf_counter()
    found = counted(
        find_faces(cropper, iter_files(files), workers=workers),
        lambda: half.setdefault("rss", rss_mb()),
        len(files),
    )
    rows = list(score_rows(det, found))
    seconds = time.perf_counter() - start
    rss_end = rss_mb()
    faces = sum(r.p_fake is not None for r in rows)
    return {
        "workers": workers,
        "images": len(files),
        "faces": faces,
        "errors": sum(r.error is not None for r in rows),
        "seconds": seconds,
        "images_per_s": len(files) / seconds,
        "faces_per_s": faces / seconds,
        "ms_per_image": seconds * 1000 / len(files),
        "rss_mb_start": rss_start,
        "rss_mb_half": half.get("rss", rss_end),
        "rss_mb_end": rss_end,
        "rss_growth_mb": rss_end - half.get("rss", rss_end),
        "peak_rss_mb": peak_rss_mb(),
    }


def detector_table(files: list[Path]) -> dict[str, dict]:
    """Each registered face detector in the CLI's cropper (SFace's template) on ``files``,
    interleaved photo by photo: ms/photo (median, mean) and the share with a face found."""
    from fakespotter.faces import load_image
    from fakespotter.faces.pipeline import FaceCropper

    sface = get_backbone("sface")
    croppers = {
        name: FaceCropper(sface.input_size, sface.alignment_template, detector=name, progress=False)
        for name in FACE_DETECTORS
    }
    # the baseline of issue #29's pooling change, side by side: MTCNN with torch's own
    # (NCHW) max pooling, as before
    croppers["mtcnn-nchw-pooling"] = FaceCropper(
        sface.input_size, sface.alignment_template, detector="mtcnn", progress=False
    )
    _plain_pooling(croppers["mtcnn-nchw-pooling"].detector)
    seconds: dict[str, list[float]] = {name: [] for name in croppers}
    found = dict.fromkeys(croppers, 0)
    for path in files:
        image = load_image(path)
        for name, find in croppers.items():
            start = time.perf_counter()
            faces = find(image)
            seconds[name].append(time.perf_counter() - start)
            found[name] += bool(faces)
    return {
        name: {
            "photos": len(files),
            "ms_per_photo": 1000 * statistics.median(s),
            "ms_per_photo_mean": 1000 * statistics.fmean(s),
            "found_rate": found[name] / len(files),
        }
        for name, s in seconds.items()
    }


def _plain_pooling(mtcnn) -> None:
    """Put ``nn.MaxPool2d`` back in place of ``faces.mtcnn.MaxPool`` (same values)."""
    from torch import nn

    from fakespotter.faces.mtcnn import MaxPool

    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        for name, module in list(net.named_children()):
            if isinstance(module, MaxPool):
                pool = nn.MaxPool2d(module.kernel_size, module.stride, ceil_mode=module.ceil_mode)
                setattr(net, name, pool)


def _spin(stop) -> None:
    """Busy-wait on one core until ``stop`` is set: the competing process of --busy."""
    while not stop.is_set():
        sum(range(10_000))


def busy_detect_run(det: FakeSpotter, files: list[Path]) -> dict:
    """``detect_run`` while another process keeps one core busy."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    spinner = ctx.Process(target=_spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.5)  # the spinner is running before the clock starts
        return detect_run(det, files, aligned=False, workers=None)
    finally:
        stop.set()
        spinner.join(5)
        if spinner.is_alive():
            spinner.kill()


def single_photo_seconds(photo: Path, repeats: int = 3, warmup: bool = True) -> dict:
    """Wall seconds of ``fakespotter detect PHOTO`` as a new process (import, weights, model,
    face finding, scoring, output), best of ``repeats`` after one warm-up run (``warmup``;
    --quick: one run and no warm-up, a smoke test of the measurement, not a figure)."""
    script = Path(sys.executable).parent / "fakespotter"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "fakespotter.cli"]
    times = []
    for _ in range(repeats + int(warmup)):
        start = time.perf_counter()
        subprocess.run([*cmd, "detect", str(photo)], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {
        "photo": photo.name,
        "seconds": min(times[int(warmup) :]),
        "all_seconds": times,
        "warmup": warmup,
    }


# -- report ------------------------------------------------------------------------------------


def table(results: dict) -> str:
    lines = [
        "ms/image (median); coverage = FakeSpotter.transform, raw neurons; ratio = coverage / plain;",
        "pruned = channel counts of the first half of the taps, forward stopped after the last",
        f"{'backbone':<8} {'batch':>5} {'plain':>8} {'channel':>8} {'ratio':>6} {'layer':>8} {'ratio':>6} "
        f"{'kmc-ch':>8} {'ratio':>6} {'pruned':>8} {'speedup':>7}",
    ]
    for name, r in results.items():
        if name in ("end_to_end", "machine", "detectors"):
            continue
        for row in [r[k] for k in r if k.startswith("batch") and isinstance(r[k], dict)] + [r]:
            lines.append(
                f"{name:<8} {row['batch']:>5} {row['plain_ms']:8.2f} {row['coverage_ms']:8.2f} "
                f"{row['ratio']:6.2f} {row['layer_ms']:8.2f} {row['layer_ratio']:6.2f} "
                f"{row['default_variant_ms']:8.2f} {row['default_variant_ratio']:6.2f} "
                f"{row['pruned_ms']:8.2f} {row['pruned_speedup']:7.2f}"
            )
    lines += ["", "ratio to the plain forward by counting engine, batch 32 (kernel / torch)"]
    for name, r in results.items():
        if "variants" in r:
            lines.append(
                f"{name:<8} "
                + "  ".join(
                    f"{variant} {v['kernel_ratio']:.2f} / {v['torch_ratio']:.2f}"
                    for variant, v in r["variants"].items()
                )
                + f"  counting alone {r['counting_alone_ms']['kernel']:.2f} / "
                f"{r['counting_alone_ms']['torch']:.2f} ms/img"
            )
    lines.append("")
    lines.append("threshold pass (NeuronCoverage.fit via FakeSpotter.fit_thresholds), batch 32")
    for name, r in results.items():
        if "fit_ms" in r:
            lines.append(
                f"{name:<8} {r['fit_ms']:8.2f} ms/image = {r['fit_ratio']:.2f} x one channel extraction pass"
            )
    e2e = results.get("end_to_end")
    if e2e:
        lines += [
            "",
            f"end to end (scan.find_faces + score_rows), model: {e2e['model']}",
            f"detect: {e2e['n']} photos from {e2e['source']}",
            f"aligned: {e2e['aligned']['images']} photos from {e2e['aligned_source']}",
            f"{'mode':<19} {'workers':>7} {'img/s':>7} {'faces/s':>8} {'ms/img':>8} {'faces':>6} "
            f"{'RSS@N/2':>8} {'RSS@N':>7} {'growth':>7} {'peak':>7}  (MiB)",
        ]
        for mode in MODES:
            if mode not in e2e:
                continue
            m = e2e[mode]
            lines.append(
                f"{mode:<19} {m['workers']:>7} {m['images_per_s']:7.2f} {m['faces_per_s']:8.2f} "
                f"{m['ms_per_image']:8.1f} {m['faces']:>6} {m['rss_mb_half']:8.0f} {m['rss_mb_end']:7.0f} "
                f"{m['rss_growth_mb']:7.1f} {m['peak_rss_mb']:7.0f}"
            )
    if "detectors" in results:
        lines += ["", "face detectors (FaceCropper, SFace template) on the detect photos"]
        for name, d in results["detectors"].items():
            lines.append(
                f"{name:<8} {d['ms_per_photo']:8.1f} ms/photo (median; mean "
                f"{d['ms_per_photo_mean']:.1f})  found {100 * d['found_rate']:.2f}% of {d['photos']}"
            )
    m = results["machine"]
    lines += [
        "",
        f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads; "
        f"counting: {m['counting']}; load average {m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after",
    ]
    return "\n".join(lines)


def network_alone(results: dict, det) -> dict | None:
    """The same run's network alone for the end-to-end model at batch 32: a plain forward and
    the model's own coverage (its variant, counted by the machine's engine), in faces/s (None:
    its backbone was not timed in this run)."""
    timed = results.get(det.network().name)
    variant = None if timed is None else timed["variants"].get(det.variant)
    if variant is None:
        return None
    used = Counter().uses
    return {
        "batch": timed["batch"],
        "variant": det.variant,
        "plain_faces_per_s": 1000 / timed["plain_ms"],
        "coverage_faces_per_s": 1000 / variant[f"{used}_ms"],
    }


def markdown(results: dict) -> str:
    """The run as markdown tables (docs/speed.md quotes them; the README quotes the first)."""
    m = results["machine"]
    out = [
        f"`{m['command']}` — {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"{m['threads']} threads, median of {m['reps']} interleaved reps; load average "
        f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after.",
        "",
        f"Counting: {m['counting'].split(' (')[0]}.",
        "",
        "| backbone | batch | plain forward ms/img | coverage (channel) ms/img | ratio | layer ms/img "
        "| ratio | kmultisection-channel ms/img | ratio | pruned (first half of taps) ms/img "
        "| speed-up | threshold pass ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name in ("end_to_end", "machine", "detectors"):
            continue
        for row in [r[k] for k in r if k.startswith("batch") and isinstance(r[k], dict)] + [r]:
            fit = f"{r['fit_ms']:.1f} ({r['fit_ratio']:.2f}x extraction)" if row is r else "–"
            out.append(
                f"| {name} | {row['batch']} | {row['plain_ms']:.1f} | {row['coverage_ms']:.1f} | "
                f"{row['ratio']:.2f} | {row['layer_ms']:.1f} | {row['layer_ratio']:.2f} | "
                f"{row['default_variant_ms']:.1f} | {row['default_variant_ratio']:.2f} | "
                f"{row['pruned_ms']:.1f} ({row['pruned_taps']}) | {row['pruned_speedup']:.2f} | {fit} |"
            )
    out += [
        "",
        "Coverage / plain forward by counting engine, batch 32: the one-pass C kernel "
        "(`fakespotter.counting`) against torch's compare-and-sum per threshold; and counting "
        "alone: every tap's output of one forward batch (the backbone's batch size) counted "
        "against the kmultisection-channel thresholds, outside the forward pass.",
        "",
        "| backbone | "
        + " | ".join(f"{v} kernel | {v} torch" for v in VARIANTS)
        + " | counting alone ms/img, kernel / torch | speed-up |",
        "|---|" + "---|---|" * len(VARIANTS) + "---|---|",
    ]
    for name, r in results.items():
        if "variants" in r:
            out.append(
                f"| {name} | "
                + " | ".join(
                    f"{r['variants'][v]['kernel_ratio']:.2f} | {r['variants'][v]['torch_ratio']:.2f}"
                    for v in VARIANTS
                )
                + f" | {r['counting_alone_ms']['kernel']:.2f} / {r['counting_alone_ms']['torch']:.2f}"
                + f" | {r['counting_alone_speedup']:.2f} |"
            )
    e2e = results.get("end_to_end")
    if e2e:
        out += [
            "",
            f"End to end, model {e2e['model']}; `detect`: {e2e['n']} photos from {e2e['source']}; "
            f"`--aligned`: {e2e['aligned']['images']} photos from {e2e['aligned_source']}.",
            "",
            "| mode | workers | images/s | faces/s | of network alone | ms/image | faces | RSS at N/2 MiB | RSS at N MiB | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        if "network_alone" in e2e:
            alone = e2e["network_alone"]
            out[-3:-3] = [
                "",
                f"Network alone in the same run (batch {alone['batch']}): a plain forward "
                f"{alone['plain_faces_per_s']:.1f} faces/s, with the model's {alone['variant']} "
                f'coverage {alone["coverage_faces_per_s"]:.1f} faces/s; "of network alone" is '
                "each row's faces/s over the latter.",
            ]
        for mode in MODES:
            if mode not in e2e:
                continue
            r = e2e[mode]
            ratio = f"{r['of_network_alone']:.2f}" if "of_network_alone" in r else "–"
            out.append(
                f"| {mode} | {r['workers']} | {r['images_per_s']:.1f} | {r['faces_per_s']:.1f} | "
                f"{ratio} | {r['ms_per_image']:.1f} | {r['faces']} | {r['rss_mb_half']:.0f} | {r['rss_mb_end']:.0f} | "
                f"{r['peak_rss_mb']:.0f} |"
            )
        if "detectors" in results:
            out += [
                "",
                "Face detectors in the CLI's cropper (SFace's template) on the same photos, "
                "interleaved photo by photo:",
                "",
                "| detector | ms/photo (median) | ms/photo (mean) | faces found |",
                "|---|---|---|---|",
            ]
            for name, d in results["detectors"].items():
                out.append(
                    f"| {name} | {d['ms_per_photo']:.1f} | {d['ms_per_photo_mean']:.1f} | "
                    f"{100 * d['found_rate']:.2f}% of {d['photos']} |"
                )
        if "single_photo_s" in e2e:
            out += [
                "",
                f"`fakespotter detect {e2e['single_photo']['photo']}` as a new process, warm "
                f"cache: {e2e['single_photo_s']:.2f} s (best of "
                f"{len(e2e['single_photo']['all_seconds']) - 1} after a warm-up).",
            ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the tables to this file"
    )
    parser.add_argument("--quick", action="store_true", help="small N, few reps (CI smoke)")
    parser.add_argument(
        "--n", type=int, default=None, help="photos for end to end (default 1000; quick 8)"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions (default 7; quick 2)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument(
        "--backbones",
        help="comma-separated (default: every registered backbone whose weights can be had)",
    )
    parser.add_argument("--images", type=Path, default=None, help="folder of photos for end to end")
    parser.add_argument(
        "--synthetic", action="store_true", help="use astronaut copies even if shared/faces exists"
    )
    parser.add_argument(
        "--busy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run `detect` while another process spins on one core (default; --no-busy skips it)",
    )
    parser.add_argument(
        "--detectors-only",
        action="store_true",
        help="only the face detectors' table (ms/photo, interleaved) on --n photos",
    )
    parser.add_argument(
        "--no-startup",
        action="store_true",
        help="skip the single-photo start-up measurement (a new process per run)",
    )
    args = parser.parse_args(argv)
    if args.backbones is None:
        backbones = backbones_with_weights(BACKBONES, on_skip=log)
    else:
        backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    for b in backbones:
        get_backbone(b)  # unknown name: fail before any work
    n = args.n or (8 if args.quick else 1000)
    reps = args.reps or (2 if args.quick else 7)
    warmup = 1 if args.quick else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    load_before = os.getloadavg()
    log(
        f"load average before: {load_before}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.detectors_only:
        with tempfile.TemporaryDirectory() as tmp:
            files, _ = photo_files(n, args.images, args.synthetic, Path(tmp))
            log(f"face detectors, {len(files)} photos")
            table = detector_table(files)
        print(json.dumps({"detectors": table}, indent=2) if args.json else table)
        return
    batches = (1, 32)
    runs: dict[str, Callable[[], object]] = {}
    for name in backbones:
        log(f"loading {name}")
        runs |= backbone_runs(name, batches)
    log(f"timing {len(runs)} runs x {reps} reps (+{warmup} warm-up)")
    medians = time_runs(runs, reps, warmup)
    results: dict = {name: backbone_results(medians, name, batches) for name in backbones}
    del runs
    gc.collect()

    with tempfile.TemporaryDirectory() as tmp:
        files, source = photo_files(n, args.images, args.synthetic, Path(tmp))
        faces, faces_source = aligned_faces(n, args.synthetic, Path(tmp))
        det, model = pick_model(backbones)
        e2e: dict = {
            "n": len(files),
            "source": source,
            "aligned_source": faces_source,
            "model": model,
            "batch_size": 32,
        }
        e2e["face_detector"] = det.face_detector
        for mode, paths, aligned, workers in (
            ("detect", files, False, None),
            *((f"detect_{name}", files, False, None) for name in FACE_DETECTORS
              if name != det.face_detector),
            ("aligned", faces, True, None),
            ("aligned_one_worker", faces, True, 1),
        ):  # fmt: skip
            log(f"  end to end, {mode}, {len(paths)} photos")
            other = mode[len("detect_") :] if mode.startswith("detect_") else None
            e2e[mode] = detect_run(det, paths, aligned, workers, face_detector=other)
        if args.busy:
            log(f"  end to end, detect on a busy machine, {len(files)} photos")
            e2e["busy_detect"] = busy_detect_run(det, files)
        e2e["detect_faces_per_s"] = e2e["detect"]["faces_per_s"]
        e2e["aligned_faces_per_s"] = e2e["aligned"]["faces_per_s"]
        if args.busy:
            e2e["busy_detect_faces_per_s"] = e2e["busy_detect"]["faces_per_s"]
        if not args.no_startup:
            log("  start-up: detect on one photo, as a new process")
            e2e["single_photo"] = (
                single_photo_seconds(ASTRONAUT, repeats=1, warmup=False)
                if args.quick
                else single_photo_seconds(ASTRONAUT)
            )
            e2e["single_photo_s"] = e2e["single_photo"]["seconds"]
        alone = network_alone(results, det)
        if alone is not None:  # each row against the same run's network: one ratio per row
            e2e["network_alone"] = alone
            for mode in MODES:
                if mode in e2e:
                    row = e2e[mode]
                    row["of_network_alone"] = row["faces_per_s"] / alone["coverage_faces_per_s"]
        results["end_to_end"] = e2e
        log(f"  face detectors, {len(files)} photos")
        results["detectors"] = detector_table(files)

    load_after = os.getloadavg()
    results["machine"] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "counting": counting_engine(),
        "reps": reps,
        "warmup": warmup,
        "load_before": list(load_before),
        "load_after": list(load_after),
        "command": " ".join(["benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    if max(load_before[0], load_after[0]) > 1:
        log(
            f"note: load average > 1 ({load_before[0]:.2f} before, {load_after[0]:.2f} after): "
            f"other work shared the CPUs"
        )
    if args.markdown:
        args.markdown.write_text(markdown(results))
        log(f"wrote {args.markdown}")
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()

"""Overhead of NeuronCoverage.transform over a plain forward pass.

Builds a small ResNet-like net (random weights), taps every conv and linear
layer, and prints the median ms/image of a plain forward vs transform, timed
in interleaved runs so machine noise hits both alike.

    PYTHONPATH=src python -m benchmarks.coverage_overhead [--batch 32 --size 112 --reps 5 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from fakespotter.coverage import NeuronCoverage
from fakespotter.taps import find_taps


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(x)) + skip)


class SmallResNet(nn.Module):
    """ResNet-18 layout at half width, with a 128-d embedding head."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), embedding: int = 128) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def activation_map(model: nn.Module) -> dict[str, str]:
    """conv1 -> relu1 inside each block, stem conv -> stem ReLU."""
    names = {name for name, _ in model.named_modules()}
    mapping = {"stem.0": "stem.2"}
    for name in names:
        if name.endswith(".conv1"):
            mapping[name] = name[: -len("conv1")] + "relu1"
    return mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch default)"
    )
    parser.add_argument("--device", default="cpu", help="e.g. cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    model = SmallResNet().eval().to(device)
    taps = find_taps(model, (3, args.size, args.size))
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    variants = {
        "layer/raw": NeuronCoverage(model, taps, "layer", "raw"),
        "channel/activation": NeuronCoverage(
            model, taps, "channel", "activation", activation_map(model)
        ),
    }
    for cov in variants.values():
        cov.fit([x])

    def plain() -> None:
        with torch.inference_mode():
            model(x)

    runs: dict[str, Callable[[], object]] = {"plain forward": plain}
    runs |= {
        name: (lambda cov=cov: cov.transform(x, return_output=True))
        for name, cov in variants.items()
    }
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, run in runs.items():
            sync()
            start = time.perf_counter()
            run()
            sync()  # transform syncs anyway (features go to numpy); the plain forward must too
            times[name].append((time.perf_counter() - start) * 1000 / args.batch)

    print(
        f"{len(taps)} taps, batch {args.batch}, {args.size}px, {device}, {torch.get_num_threads()} threads, median of {args.reps}"
    )
    base = statistics.median(times["plain forward"])
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"{name:>20}: {med:7.2f} ms/image  ratio {med / base:.3f}")


if __name__ == "__main__":
    main()

"""fakespotter: spot GAN-synthesized faces by the neuron coverage of a face-recognition network."""

import os
from importlib.metadata import PackageNotFoundError, version

# Idle OpenMP threads sleep instead of spinning. On a laptop where anything else runs, spinning
# threads fight for the cores: benchmarks/speed.py measured plain forward passes 6-60x slower
# with 2 spinning threads on a busy 2-core machine, and equal to 1 thread when passive. Only
# takes effect if torch is imported after fakespotter; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("fakespotter")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"


def scan(sources, output, **options) -> dict:
    """Score every face of every photo ``sources`` name into a Parquet folder ``output``, on
    this machine (``engine="local"``) or a Ray cluster (``engine="ray"``); returns a summary.
    The options are :func:`fakespotter.collection.scan`'s."""
    from fakespotter.collection import scan as scan_collection

    return scan_collection(sources, output, **options)


__all__ = ["__version__", "scan"]

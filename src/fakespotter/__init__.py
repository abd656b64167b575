"""fakespotter: spot GAN-synthesized faces by the neuron coverage of a face-recognition network."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fakespotter")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]

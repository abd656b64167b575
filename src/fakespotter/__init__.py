"""fakespotter: spot GAN-synthesized faces by the neuron coverage of a face-recognition network."""

from fakespotter.version import __version__


def scan(sources, output, **options) -> dict:
    """Score every face of every photo ``sources`` name into a Parquet folder ``output``, on
    this machine (``engine="local"``) or a Ray cluster (``engine="ray"``); returns a summary.
    The options are :func:`fakespotter.collection.scan`'s."""
    from fakespotter.collection import scan as scan_collection

    return scan_collection(sources, output, **options)


def load(path=None, **options):
    """The shipped model, or the model file at ``path``, ready to ``detect`` photos: see
    :mod:`fakespotter.api` (options: ``aligned``, ``device``)."""
    from fakespotter.api import load as load_model

    return load_model(path, **options)


def train(real, fake, output, **options):
    """Train a model on folders of real and fake face photos, write it to ``output`` and
    return it ready to ``detect``: see :func:`fakespotter.api.train`."""
    from fakespotter.api import train as train_model

    return train_model(real, fake, output, **options)


__all__ = ["__version__", "load", "scan", "train"]

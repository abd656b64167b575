"""The ``fakespotter`` command: parsing and printing only; the work lives in the library.

One module per command group: ``detect`` (detect, scan), ``train`` (train, update),
``evaluate``, ``info``, ``weights`` and ``serve``; ``app`` holds the group, its global options
and the exit codes, ``options`` every option that two commands share (declared once),
``common`` what several commands do alike.
"""

from fakespotter.cli import detect, evaluate, info, serve, train, weights
from fakespotter.cli.app import EXIT_FAKE_FOUND, EXIT_INPUTS_FAILED, EXIT_USAGE, main

main.add_command(serve.serve_command, "serve")

__all__ = [
    "EXIT_FAKE_FOUND",
    "EXIT_INPUTS_FAILED",
    "EXIT_USAGE",
    "detect",
    "evaluate",
    "info",
    "main",
    "serve",
    "train",
    "weights",
]

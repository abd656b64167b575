"""Errors a user can put right, and how any error is shown in one line.

A :class:`UserError` (a bad file, option, model or output) is what the command line shows as
one clean line and the web service as its ``detail``; anything else is a bug and keeps its
traceback. ``fakespotter --debug`` shows the traceback of a user error too.
"""

from __future__ import annotations

import re


def install_extra(extra: str) -> str:
    """How to install an optional extra: fakespotter is not on PyPI, so from a clone or a
    wheel built from one (README, "Install and run")."""
    return (
        f"pip install -e '.[{extra}]' in a fakespotter clone, or "
        f"pip install 'WHEEL[{extra}]' with the fakespotter wheel you built"
    )


class UserError(ValueError):
    """Something the user can put right; its message is one line for them."""


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of an error's text, without an OS error number
    ("[Errno 2] No such file" -> "No such file"); the type's name when it has no text."""
    text = error if isinstance(error, str) else str(error)
    for line in text.splitlines():
        line = re.sub(r"\[Errno -?\d+\] ", "", line.strip())
        if line:
            return line
    return "error" if isinstance(error, str) else type(error).__name__

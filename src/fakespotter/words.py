"""Counts in messages, in good English: "1 face", "2 faces"."""

from __future__ import annotations


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``n`` and ``noun``, the noun in its plural (``plural_form``, else noun + "s") unless
    ``n`` is 1: ``plural(1, "face")`` is "1 face", ``plural(0, "face")`` "0 faces"."""
    return f"{n} {noun if n == 1 else plural_form or noun + 's'}"

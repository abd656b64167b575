"""Fields imported on first use: a registry lists its networks by name (``--help``, ``weights
list``) without importing their code, and the code (and torch) is imported when a field is
read."""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """A ``"module:attr"`` reference (``attr`` may be dotted) imported on first use."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._value: Any = None
        self._resolved = False

    def resolve(self) -> Any:
        if not self._resolved:
            module, _, attr = self.ref.partition(":")
            value = importlib.import_module(module)
            for part in attr.split("."):
                value = getattr(value, part)
            self._value, self._resolved = value, True
        return self._value

    def __repr__(self) -> str:
        return f"Lazy({self.ref!r})"


def lazy(ref: str) -> Any:
    """``Lazy(ref)`` typed as the spec field it fills: reading the field resolves it."""
    return Lazy(ref)


class Resolving:
    """Reading a field that holds a :class:`Lazy` gives the value it refers to."""

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        return value.resolve() if isinstance(value, Lazy) else value

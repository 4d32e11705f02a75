"""One registry class for every named concept (methods, models, datasets).

A registry is a read-only mapping from a name to an entry. Looking up a name that is
not there raises `UnknownNameError`, which is both a `KeyError` (so `in` and `.get` behave
like a dict) and a `ValueError` (so callers that validate user input catch one type), and
whose message lists the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, in registration order (the order the dashboard lists them)."""

    def __init__(self, concept: str):
        self.concept = concept
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.concept} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make_entry: Callable[[Callable], T]) -> Callable[[Callable], Callable]:
        """Register `make_entry(fn)` under `name` and return `fn` unchanged."""

        def wrap(fn: Callable) -> Callable:
            self.register(name, make_entry(fn))
            return fn

        return wrap

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown {self.concept} {name!r}; choose one of: {', '.join(self._entries)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}: {', '.join(self._entries)})"

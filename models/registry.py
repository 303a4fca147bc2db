"""One shape for every "find an implementation by name" in cbir: heads, backbones, runtimes, vector stores,
index types, encoder kinds, fitters.

As in timm's and torchvision's model registries, a new entry is one decorated definition: registering a name
twice is a mistake (refused, not an override), an unknown name is answered with the known ones, and tests
iterate over ``names()`` so that a new entry is covered the day it lands. Importing this module costs
nothing (no torch): the CLI's configuration and the index package use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, e.g. ``Registry[type[Head]]("head")``.

    ``unknown`` is the message for a name that is not registered, formatted with ``name`` (the name asked
    for) and ``known`` (the registered names, comma-separated); ``error`` is the exception class it is raised
    as. ``sort``: list names alphabetically (else in registration order, for kinds whose order means
    something, such as index types from exact to most compressed).
    """

    def __init__(
        self,
        kind: str,
        *,
        unknown: str | None = None,
        error: Callable[[str], Exception] = ValueError,
        sort: bool = True,
    ) -> None:
        self.kind = kind
        self._unknown = unknown or f"unknown {kind} {{name!r}}; known: {{known}}"
        self._error = error
        self._sort = sort
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated object available under ``name``; a taken name raises ValueError."""

        def decorate(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorate

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            owner = getattr(self._entries[name], "__module__", None)
            by = f" (by {owner})" if isinstance(owner, str) else ""
            raise ValueError(f"{self.kind} {name!r} is already registered{by}")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry registered under ``name``; ``error`` naming the known names when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise self._error(self._unknown.format(name=name, known=", ".join(self.names()))) from None

    def names(self) -> list[str]:
        return sorted(self._entries) if self._sort else list(self._entries)

    def values(self) -> list[T]:
        return [self._entries[name] for name in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (a test registers throw-away ones into a copy)."""
        twin: Registry[T] = Registry(self.kind, unknown=self._unknown, error=self._error, sort=self._sort)
        twin._entries = dict(self._entries)
        return twin

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

"""A name -> entry table that refuses a second entry under one name and lists the known names on a miss.

This is the subset fitters use of models/registry.py's `Registry[T]` (register(name) decorator, get(name),
names(), ``in``; written on another branch at the same time), with the same messages and constructor: when
that module is on main, base.py imports it from there and this file goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    def __init__(self, kind: str, *, error: Callable[[str], Exception] = ValueError) -> None:
        self.kind = kind  # what an entry is, for the messages: "fitter", "index type"
        self._error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated entry available under ``name``."""

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise self._error(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

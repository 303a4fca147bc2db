"""Waiting for something to happen without asserting how long it took.

A deadline only bounds a wait that would otherwise hang; it is never the thing tested. When it passes, the
failure says what did not happen (and, where given, what was seen instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

POLL_S = 0.02

_T = TypeVar("_T")


def wait_for(
    check: Callable[[], _T | None],
    what: str,
    timeout: float = 120.0,
    *,
    ignoring: tuple[type[BaseException], ...] = (),
    seen: Callable[[], object] | None = None,
    alive: Callable[[], bool] | None = None,
    interval: float = POLL_S,
) -> _T:
    """The first truthy value of ``check()``, polled until ``timeout``. ``what`` completes "timed out waiting
    for ..."; ``ignoring``: exceptions that mean "not yet" (a server not listening), the last one reported at
    the deadline; ``seen`` reports the state at the deadline; ``alive`` (e.g. a process still running) stops
    the wait early when it turns false; ``interval``: seconds between checks."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None

    def attempt() -> _T | None:
        nonlocal last
        try:
            return check()
        except ignoring as exc:
            last = exc
            return None

    while not (value := attempt()):
        if alive is not None and not alive():
            if value := attempt():
                return value
            raise AssertionError(f"gave up waiting for {what}: the process it depends on ended")
        if time.monotonic() > deadline:
            detail = f" (seen: {seen()!r})" if seen is not None else ""
            error = f" (last error: {last})" if last is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}{error}")
        time.sleep(interval)
    return value


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = 120.0,
    seen: Callable[[], object] | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``condition`` until it is truthy (``wait_for`` without the value)."""
    wait_for(condition, what, timeout, seen=seen, alive=alive)

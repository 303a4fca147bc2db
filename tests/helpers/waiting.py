"""Waiting for something to happen without asserting how long it took.

A deadline only bounds a wait that would otherwise hang; it is never the thing tested. When it passes, the
failure says what did not happen (and, where given, what was seen instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = 120.0,
    seen: Callable[[], object] | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll `condition` until it is truthy. `what` completes "timed out waiting for ..."; `seen` reports the
    state at the deadline; `alive` (e.g. a process still running) stops the wait early when it turns false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            if condition():
                return
            raise AssertionError(f"gave up waiting for {what}: the process it depends on ended")
        if time.monotonic() > deadline:
            detail = f" (seen: {seen()!r})" if seen is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(POLL_S)

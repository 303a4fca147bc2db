"""Progress of a long command where no terminal shows a bar (docker logs, cron, a pipe), and a clean stop.

rich draws nothing when stderr is not a terminal, so a bulk job run by docker or cron used to print nothing
for as long as it ran (10 minutes and 3,284 images with an empty log, measured) and SIGTERM ended it
silently. Here: a line every ``every`` seconds with the count, rate, ETA and what was not added; and a
signal handler that asks the job to stop after the batch in flight, so the summary is still printed.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TextIO


class ProgressLines:
    """A Progress callback (files done, images added) that prints a line at most every ``every`` seconds."""

    def __init__(self, description: str, total: int, out: TextIO, every: float = 10.0) -> None:
        self.description, self.total, self.out, self.every = description, total, out, every
        self.started = time.monotonic()
        self.last = -float("inf")
        self.done = self.added = 0

    def __call__(self, done: int, added: int) -> None:
        self.done, self.added = done, added
        now = time.monotonic()
        if now - self.last >= self.every or done >= self.total:
            self.last = now
            self.out.write(self.line(now) + "\n")
            self.out.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:.0f} s" if left != float("inf") else "?"
        return (
            f"{self.description}: {self.done}/{self.total} files, {self.added} added, "
            f"{self.done - self.added} not added (duplicates or skipped), {rate:.1f} files/s, ETA {eta}"
        )


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An Event set by the first SIGTERM or SIGINT (a second one stops at once, as without this)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for number, old in previous.items():
            signal.signal(number, old)

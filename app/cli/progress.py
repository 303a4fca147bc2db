"""Progress of a long command: a bar at a terminal, a line every few seconds elsewhere, and a clean stop.

rich draws nothing when stderr is not a terminal, so a bulk job run by docker or cron used to print nothing
for as long as it ran (10 minutes and 3,284 images with an empty log, measured) and SIGTERM ended it
silently. So away from a terminal ProgressLines prints a line every ``every`` seconds with the count, rate,
ETA and what was not added; and `stop_on_signals` asks the job to stop after the batch in flight, so the
summary is still printed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from app.cli.render import err_console

if TYPE_CHECKING:  # models (torch) is imported by the commands that train, not by `cbir --help`
    from models.training import EpochReport

Update = Callable[[int, int], None]


class RateColumn(ProgressColumn):
    """Images per second over the whole run (rich's own speed column only shows bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        images = task.fields.get("images", 0)
        rate = images / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.1f} img/s", style="progress.data.speed")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Update]:
    """A bar over ``total`` files; the callback takes (files done, images so far)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total, images=0)

        def update(done: int, images: int) -> None:
            progress.update(task, completed=done, images=images)

        yield update


@contextmanager
def file_progress(description: str) -> Iterator[Update]:
    """A bar whose total arrives with the updates (done, total): a backup knows its files only after its
    snapshot."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@contextmanager
def index_progress(description: str, total: int, every: float) -> Iterator[Update]:
    """A bar at a terminal; elsewhere (docker logs, cron, a pipe) a line every ``every`` seconds."""
    if err_console.is_terminal:
        with progress_bar(description, total) as update:
            yield update
        return
    yield ProgressLines(description, total, sys.stderr, every)


@dataclass
class TrainingProgress:
    on_read: Update
    on_step: Callable[[int, int, int, float], None]
    on_epoch: Callable[[EpochReport], None]


@contextmanager
def training_progress(epochs: int, reading: int | None = None) -> Iterator[TrainingProgress]:
    """A bar over the pictures read (when ``reading`` counts them), then over each epoch's steps with the
    running loss, and one printed line per finished epoch (rich shows one live display at a time)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        reader = progress.add_task("reading", total=reading, note="") if reading is not None else None
        task = progress.add_task("training", total=None, note="", start=reading is None)

        def on_read(done: int, pictures: int) -> None:
            if reader is not None:
                progress.update(reader, completed=done, note=f"{pictures} pictures")

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            progress.start_task(task)
            progress.update(
                task,
                completed=step,
                total=steps,
                description=f"epoch {epoch}/{epochs}",
                note=f"loss {loss:.5f}",
            )

        def on_epoch(report: EpochReport) -> None:
            val = f"{report.val_loss:.5f}" if report.val_loss is not None else "-"
            progress.console.print(
                f"epoch {report.epoch}/{report.epochs}: loss {report.train_loss:.5f}, validation {val}"
                f"{' (best)' if report.improved else ''}, {report.seconds:.1f} s"
            )

        yield TrainingProgress(on_read, on_step, on_epoch)


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

"""Bulk jobs over many files: indexing a folder, a glob or a manifest (re-embedding: app/jobs/reindex.py).

The files go through the jobs' stages run here (runner.py) into the collection's writer (writer.py); the
Ray run (ray.py) shares the reader, the embed stage and the writer and differs only in where they run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from app.collection.facade import Collection
from app.files.decoding import Skipped, list_files
from app.jobs.runner import run_stages
from app.jobs.sources import SourceItem, resolve_source
from app.jobs.writer import BulkReport, Progress, Writer

__all__ = [
    "BulkReport",
    "Progress",
    "batched",
    "index_directory",
    "index_files",
    "index_source",
    "list_files",
]

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def index_files(
    collection: Collection,
    paths: Sequence[Path] | Sequence[SourceItem],
    *,
    copy_files: bool = True,
    on_progress: Progress | None = None,
    skipped: Sequence[Skipped] = (),
    stop: threading.Event | None = None,
) -> BulkReport:
    """Index these files (with their metadata, for SourceItems); ``skipped`` joins the report as given
    (a manifest's unusable rows). ``stop``: once set, the batches in flight are committed and no more read
    (``report.stopped``)."""
    items = [p if isinstance(p, SourceItem) else SourceItem(p) for p in paths]
    settings = collection.settings
    report = BulkReport(files=len(items), skipped=list(skipped))
    known = collection.known_sha256()
    writer = Writer(collection, report, copy_files=copy_files, on_progress=on_progress)

    @contextmanager
    def gated(images: int) -> Iterator[None]:
        with collection.gate.slot(), collection.meter.running(images):
            yield

    started = time.perf_counter()
    report.stopped = run_stages(
        items,
        collection.encoder,
        writer,
        max_pixels=settings.max_pixels,
        gpu_decode=settings.gpu_decode,
        workers=settings.workers,
        known=known.__contains__,
        slot=gated,
        stop=stop,
    )
    writer.finish()
    report.seconds = time.perf_counter() - started
    return report


def index_directory(
    collection: Collection, root: Path, *, copy_files: bool = True, on_progress: Progress | None = None
) -> BulkReport:
    return index_files(collection, list_files(root), copy_files=copy_files, on_progress=on_progress)


def index_source(
    collection: Collection,
    source: str | Path,
    *,
    path_column: str = "path",
    copy_files: bool = True,
    on_progress: Progress | None = None,
) -> BulkReport:
    """A directory, a glob pattern or a manifest (app/jobs/sources.py)."""
    listing = resolve_source(source, path_column=path_column)
    return index_files(
        collection, listing.items, copy_files=copy_files, on_progress=on_progress, skipped=listing.skipped
    )

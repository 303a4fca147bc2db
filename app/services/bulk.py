"""Bulk jobs over many files: indexing a folder (re-embedding a collection is app/services/reindex.py).

Files are read and decoded by a thread pool while the caller's thread runs the encoder, so decoding overlaps
inference. Every batch is committed to the database (rows with their vectors) as soon as it is embedded, and
the index file is saved every ``commit_every`` images: an interrupted run loses at most the batch in flight,
and a rerun skips what is stored (by sha256) and goes on where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from app.services.collection import Collection
from app.services.decoding import Prepared, Skipped, list_files, load_files

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (files done, images added)


@dataclass
class BulkReport:
    files: int = 0
    added: int = 0
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


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
    paths: list[Path],
    *,
    copy_files: bool = True,
    on_progress: Progress | None = None,
) -> BulkReport:
    settings = collection.settings
    report = BulkReport(files=len(paths))
    known = collection.known_sha256()
    seen_this_run: set[str] = set()
    started = time.perf_counter()
    since_save = 0
    done = 0

    def flush(batch: list[Prepared]) -> None:
        nonlocal since_save
        vectors = collection.embed_prepared(batch)
        for added in collection.ingest(batch, vectors, copy_files=copy_files):
            if added.duplicate:
                report.duplicates += 1
            else:
                report.added += 1
                since_save += 1
        if since_save >= settings.commit_every:
            collection.save_index()
            since_save = 0

    pending: list[Prepared] = []
    for result in load_files(
        paths,
        max_side=collection.encoder.max_side,
        max_pixels=settings.max_pixels,
        workers=settings.workers,
        known=known.__contains__,
    ):
        done += 1
        if isinstance(result, Skipped):
            if result.duplicate:
                report.duplicates += 1
            else:
                report.skipped.append(result)
        elif result.sha256 in seen_this_run:
            report.duplicates += 1
        else:
            seen_this_run.add(result.sha256)
            pending.append(result)
            if len(pending) == collection.encoder.batch_size:
                flush(pending)
                pending = []
        if on_progress is not None:
            on_progress(done, report.added + len(pending))
    if pending:
        flush(pending)
    if since_save or not collection.settings.index_path.exists():
        collection.save_index()
    report.seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(done, report.added)
    return report


def index_directory(
    collection: Collection, root: Path, *, copy_files: bool = True, on_progress: Progress | None = None
) -> BulkReport:
    return index_files(collection, list_files(root), copy_files=copy_files, on_progress=on_progress)

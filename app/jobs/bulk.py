"""Bulk jobs over many files: indexing a folder, a glob or a manifest (re-embedding: app/jobs/reindex.py).

Loading (worker processes), moving to the device (a thread), the forward pass (the caller's thread) and
writing (a thread) overlap on consecutive batches (app/jobs/pipeline.py). Every batch is committed to
the database (rows with their vectors) in one transaction and added to FAISS in one call as soon as it is
embedded; the index file is saved every ``commit_every`` images but at most every few seconds (the database
is the source of truth, and a crash costs only a replay of its vectors at the next open). An interrupted
run loses at most the batches in flight, and a rerun skips what is stored (by sha256).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from app.collection.facade import Collection
from app.files.decoding import Skipped, list_files
from app.jobs.loading import LoadOptions, batch_loader
from app.jobs.pipeline import Chunk, DeviceStage, ShapeBatcher, ahead, embed_later, wait_for
from app.jobs.sources import SourceItem, resolve_source
from models import Encoder, ImageEncoder

__all__ = ["BulkReport", "batched", "index_directory", "index_files", "index_source", "list_files"]

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (files done, images added)

# Saving rewrites the whole index file: with a save every commit_every images, a job of n images would
# write O(n^2) bytes. The database holds every vector, so a less recent file only lengthens the replay
# at the next open after a crash.
MIN_SECONDS_BETWEEN_SAVES = 10.0
# Batches embedded but not yet written: bounds memory, and what an interruption can lose.
WRITES_IN_FLIGHT = 2


@dataclass
class BulkReport:
    files: int = 0
    added: int = 0
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # by a signal: the files after the last batch were not read

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


class _Writer:
    """Commits embedded batches in order (one transaction and one FAISS add each) and reports progress.

    Runs in the writer thread: progress is reported after the commit, so what a progress callback sees in
    the database is exactly what was reported.
    """

    def __init__(
        self, collection: Collection, report: BulkReport, copy_files: bool, on_progress: Progress | None
    ) -> None:
        self.collection, self.report = collection, report
        self.made_by = collection.encoder.fingerprint  # the encoder the run embeds with, to its end
        self.copy_files, self.on_progress = copy_files, on_progress
        self.done = 0
        self.since_save = 0
        self.last_save = time.monotonic()

    def __call__(
        self,
        embedded: list[tuple[Chunk, Callable[[], np.ndarray]]],
        dropped: int = 0,
        skipped: Sequence[Skipped] = (),
    ) -> None:
        """Write the chunks embedded since the last call (waiting for their vectors); ``dropped`` files were
        duplicates of this run or of the collection, ``skipped`` ones unreadable."""
        report = self.report
        for chunk, vectors_when_ready in embedded:
            vectors = vectors_when_ready()
            added, duplicates = self.collection.ingest_many(
                chunk.items, vectors, copy_files=self.copy_files, made_by=self.made_by
            )
            report.added += added
            report.duplicates += duplicates
            self.since_save += added
        report.duplicates += dropped
        report.skipped.extend(skipped)
        now = time.monotonic()
        settings = self.collection.settings
        if self.since_save >= settings.commit_every and now - self.last_save >= MIN_SECONDS_BETWEEN_SAVES:
            self.collection.save_index()
            self.since_save, self.last_save = 0, now
        if self.on_progress is not None:
            settled = dropped + len(skipped) + sum(len(chunk.items) for chunk, _ in embedded)
            for _ in range(settled):  # per file, so a callback may act at any file count
                self.done += 1
                self.on_progress(self.done, report.added)


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
    encoder = collection.encoder
    report = BulkReport(files=len(items), skipped=list(skipped))
    known = collection.known_sha256()
    options = LoadOptions(
        max_side=encoder.max_side,
        max_pixels=settings.max_pixels,
        device_jpeg=(isinstance(encoder, Encoder) and encoder.device.type == "cuda" and settings.gpu_decode),
    )
    loader = batch_loader(
        items,
        options,
        batch_size=encoder.batch_size,
        workers=settings.workers,
        known=known.__contains__,
        pin_memory=encoder.device.type == "cuda",
    )
    writer = _Writer(collection, report, copy_files, on_progress)
    cuda = encoder.device.type == "cuda"
    batcher = ShapeBatcher(encoder.batch_size, pad=cuda, max_waiting=4 * encoder.batch_size)
    pad_to = encoder.batch_size if cuda else None
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbir-write") as writes:
        pending: deque[Future[None]] = deque()

        def submit(chunks: list[Chunk], dropped: int = 0, skipped: Sequence[Skipped] = ()) -> None:
            embedded = [(chunk, _embed(collection, encoder, chunk, pad_to)) for chunk in chunks]
            pending.append(writes.submit(writer, embedded, dropped, skipped))
            while len(pending) > WRITES_IN_FLIGHT or (pending and pending[0].done()):
                pending.popleft().result()

        try:
            stage = DeviceStage(encoder, max_pixels=settings.max_pixels)
            for batch in ahead(iter(loader), stage):
                if stop is not None and stop.is_set():
                    report.stopped = True
                    break
                wait_for(batch, encoder.device)
                submit(batcher.add(batch), batch.duplicates, batch.skipped)
            submit(batcher.flush())
        finally:
            for future in pending:  # commit what was embedded; raise the first failure
                future.result()
    if writer.since_save or not settings.index_path.exists():
        collection.save_index()
    report.seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(writer.done, report.added)
    return report


def _embed(
    collection: Collection, encoder: ImageEncoder, chunk: Chunk, pad_to: int | None
) -> Callable[[], np.ndarray]:
    with collection.gate.slot(), collection.meter.running(len(chunk.items)):
        return embed_later(encoder, chunk, pad_to=pad_to)


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

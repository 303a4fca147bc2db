"""Bulk jobs over many files: indexing a folder, a glob or a manifest (re-embedding: app/jobs/reindex.py).

The local run of the jobs' stages: reading (worker processes, reader.py), moving to the device (a thread,
device.py), the forward pass (the caller's thread, embed.py) and writing (a thread, writer.py) overlap on
consecutive batches. The Ray run (ray.py) shares the reader, the embed stage and the writer and differs
only in where the first three run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from app.collection.facade import Collection
from app.files.decoding import Skipped, list_files
from app.jobs.device import DeviceStage, ahead, wait_for
from app.jobs.embed import Embedded, EmbedStage
from app.jobs.reader import ReadOptions, batch_loader
from app.jobs.sources import SourceItem, resolve_source
from app.jobs.writer import BulkReport, Progress, Writer
from models import Encoder, ImageEncoder

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
# Batches embedded but not yet written: bounds memory, and what an interruption can lose.
WRITES_IN_FLIGHT = 2


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_options(encoder: ImageEncoder, max_pixels: int, gpu_decode: bool) -> ReadOptions:
    """Pixels for the encoder; JPEGs left to the GPU's decoder when it is a CUDA encoder and allowed to."""
    on_gpu = isinstance(encoder, Encoder) and encoder.device.type == "cuda" and gpu_decode
    return ReadOptions(max_side=encoder.max_side, max_pixels=max_pixels, device_jpeg=on_gpu)


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
    loader = batch_loader(
        items,
        read_options(encoder, settings.max_pixels, settings.gpu_decode),
        batch_size=encoder.batch_size,
        workers=settings.workers,
        known=known.__contains__,
        pin_memory=encoder.device.type == "cuda",
    )
    writer = Writer(collection, report, copy_files=copy_files, on_progress=on_progress)

    @contextmanager
    def gated(images: int) -> Iterator[None]:
        with collection.gate.slot(), collection.meter.running(images):
            yield

    embedder = EmbedStage(encoder, max_waiting=4 * encoder.batch_size, slot=gated)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbir-write") as writes:
        pending: deque[Future[None]] = deque()

        def submit(embedded: list[Embedded], dropped: int = 0, skipped: Sequence[Skipped] = ()) -> None:
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
                submit(embedder.add(batch), batch.duplicates, batch.skipped)
            submit(embedder.flush())
        finally:
            for future in pending:  # commit what was embedded; raise the first failure
                future.result()
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

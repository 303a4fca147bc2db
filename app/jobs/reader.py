"""The jobs' first stage: read, hash and decode files, in a thread pool or in worker processes.

One function reads a file (``read_file``: the size limit, the hash, the "already stored" check, the decode)
and two flavours run it over many:

- ``batch_loader``, worker processes (torch's DataLoader), for the bulk and Ray jobs: on a GPU host the job
  must read thousands of files a second, and PIL's header parsing and Python's bookkeeping hold the GIL.
  Each result is pixels decoded on the CPU (uint8, the exact pixels the upload path makes) with the
  picture's local features for its row, or, for JPEGs the GPU may decode, just the checked bytes
  (models.device_decode; their features are derived at their first verification). Batches stack the CPU
  pixels by shape, ready to be pinned and moved to the model's device in one copy per shape.
- ``load_files``, threads, for the jobs that embed pictures one by one (reindex, learning, evaluation):
  PIL and hashlib release the GIL while they work, so threads overlap decoding with the forward pass in the
  caller, and a bounded window of pending futures keeps memory flat on huge folders.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from app.files.decoding import MAX_FILE_BYTES, Skipped, sha256_of
from app.jobs.records import ImageRecord
from app.jobs.sources import SourceItem
from models import ImageDecodeError, decode_image
from models.device_decode import routes_to_device
from models.local_features import extract
from models.preprocess import pixels_from_image, probe_image

__all__ = [
    "Known",
    "ReadBatch",
    "ReadOptions",
    "batch_loader",
    "collate",
    "load_files",
    "nothing_known",
    "read_file",
]

Known = Callable[[str], bool]  # sha256 -> already in the collection
Read = tuple[ImageRecord | Skipped, torch.Tensor | None]


def nothing_known(_digest: str) -> bool:
    return False


@dataclass(frozen=True)
class ReadOptions:
    max_side: int
    max_pixels: int
    device_jpeg: bool = False  # JPEGs the GPU can decode are left undecoded
    pictures: bool = False  # keep the decoded picture in the record instead of returning pixels
    local_features: bool = False  # extract the picture's local features for its row (the collection's jobs)


def read_file(item: SourceItem, options: ReadOptions, known: Known = nothing_known) -> Read:
    """The record of one file (or why it was skipped), and its CPU-decoded pixels when the options ask for
    pixels and the GPU does not take it."""
    path = item.path
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Skipped(path, f"file is {size} bytes, above the {MAX_FILE_BYTES} byte limit"), None
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}"), None
    digest = sha256_of(data)
    if known(digest):
        return Skipped(path, "duplicate of an image already in the collection", duplicate=True), None
    record = ImageRecord(digest, data, 0, 0, "", item.name or path.name, str(path.resolve()), dict(item.meta))
    try:
        if options.device_jpeg:
            probe = probe_image(data, max_pixels=options.max_pixels)
            if routes_to_device(probe, data):
                record.width, record.height, record.format = probe.width, probe.height, probe.format
                record.orientation, record.on_device = probe.orientation, True
                return record, None
        decoded = decode_image(data, max_side=options.max_side, max_pixels=options.max_pixels)
    except ImageDecodeError as exc:
        return Skipped(path, str(exc)), None
    record.width, record.height, record.format = decoded.width, decoded.height, decoded.format
    if options.local_features:
        record.local_features = extract(decoded.image).to_bytes()
    if options.pictures:
        record.picture = decoded
        return record, None
    return record, pixels_from_image(decoded.image, options.max_side)


def load_files(
    paths: Iterable[Path] | Iterable[SourceItem],
    *,
    max_side: int,
    max_pixels: int,
    workers: int,
    known: Known = nothing_known,
    lookahead: int = 256,
) -> Iterator[ImageRecord | Skipped]:
    """Records with their decoded pictures, read in a thread pool and yielded in input order."""
    options = ReadOptions(max_side, max_pixels, pictures=True)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cbir-decode") as pool:
        pending: deque[Future[Read]] = deque()
        for path in paths:
            item = path if isinstance(path, SourceItem) else SourceItem(path)
            pending.append(pool.submit(read_file, item, options, known))
            if len(pending) >= lookahead:
                yield pending.popleft().result()[0]
        while pending:
            yield pending.popleft().result()[0]


@dataclass
class ReadBatch:
    """One batch in input order; CPU-decoded pixels stacked per shape as (positions, uint8 tensor)."""

    results: list[ImageRecord | Skipped]
    groups: list[tuple[list[int], torch.Tensor]]

    def pin_memory(self) -> ReadBatch:
        """Called by the DataLoader's pinning thread: page-locked memory makes the copy to the GPU async."""
        self.groups = [(positions, pixels.pin_memory()) for positions, pixels in self.groups]
        return self


def collate(pairs: Sequence[Read]) -> ReadBatch:
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, (_, pixels) in enumerate(pairs):
        if pixels is not None:
            by_shape.setdefault(tuple(pixels.shape), []).append(position)
    groups = [
        (positions, torch.stack([pairs[p][1] for p in positions]))  # type: ignore[misc]
        for positions in by_shape.values()
    ]
    return ReadBatch([result for result, _ in pairs], groups)


class _Files(Dataset[Read]):
    def __init__(self, items: Sequence[SourceItem], options: ReadOptions, known: Known):
        self.items, self.options, self.known = items, options, known

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Read:
        return read_file(self.items[index], self.options, self.known)


def batch_loader(
    items: Sequence[SourceItem],
    options: ReadOptions,
    *,
    batch_size: int,
    workers: int,
    known: Known = nothing_known,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """Batches of records with their pixels in input order, `workers` processes reading ahead (two batches
    each).

    ``known`` runs in the workers (forked, so a large set of hashes is shared, not copied up front).
    """
    return DataLoader(
        _Files(items, options, known),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers > 0 else None,
        multiprocessing_context="fork" if workers > 0 else None,
        worker_init_fn=_die_with_parent if workers > 0 else None,
    )


def _die_with_parent(_worker_id: int) -> None:
    """A worker ends when the job that forked it is killed (`kill -9`, the OOM killer).

    torch's own check of the parent runs only between batches; a worker blocked writing a batch the dead
    job will never read stays blocked (its siblings hold the pipe open), so a killed job used to leave its
    workers behind. Linux's PR_SET_PDEATHSIG has the kernel kill the worker with its parent.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the job died before the call took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

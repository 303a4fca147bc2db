"""The bulk job's first stage: read, hash, decode and resize files in worker processes, batch by batch.

Worker processes (torch's DataLoader) instead of threads, because on a GPU host the job must read thousands
of files a second, and PIL's header parsing and Python's bookkeeping hold the GIL. Each result is either
pixels decoded on the CPU (uint8, the exact pixels the upload path makes) or, for JPEGs the GPU may decode,
just the checked bytes (models.device_decode). Batches stack the CPU pixels by shape, ready to be pinned and
moved to the model's device in one copy per shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from app.files.decoding import MAX_FILE_BYTES, Skipped, sha256_of
from app.jobs.sources import SourceItem
from models import ImageDecodeError, decode_image
from models.device_decode import routes_to_device
from models.preprocess import pixels_from_image, probe_image


@dataclass
class Loaded:
    """A file read and hashed, decoded on the CPU (pixels) or left for the GPU decoder (on_device)."""

    sha256: str
    data: bytes
    width: int  # of the original, after EXIF orientation (what the row stores)
    height: int
    format: str
    original_name: str
    source_path: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    orientation: int = 1
    on_device: bool = False  # True: JPEG bytes for nvJPEG; False: pixels decoded here


@dataclass
class LoadedBatch:
    """One batch in input order; CPU-decoded pixels stacked per shape as (positions, uint8 tensor)."""

    results: list[Loaded | Skipped]
    groups: list[tuple[list[int], torch.Tensor]]

    def pin_memory(self) -> LoadedBatch:
        """Called by the DataLoader's pinning thread: page-locked memory makes the copy to the GPU async."""
        self.groups = [(positions, pixels.pin_memory()) for positions, pixels in self.groups]
        return self


@dataclass(frozen=True)
class LoadOptions:
    max_side: int
    max_pixels: int
    device_jpeg: bool  # JPEGs the GPU can decode are left undecoded


def load_item(
    item: SourceItem, options: LoadOptions, known: Callable[[str], bool]
) -> tuple[Loaded | Skipped, torch.Tensor | None]:
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
    source = str(path.resolve())
    name = item.name or path.name
    try:
        if options.device_jpeg:
            probe = probe_image(data, max_pixels=options.max_pixels)
            if routes_to_device(probe, data):
                loaded = Loaded(digest, data, probe.width, probe.height, probe.format, name, source)
                loaded.meta, loaded.orientation, loaded.on_device = dict(item.meta), probe.orientation, True
                return loaded, None
        decoded = decode_image(data, max_side=options.max_side, max_pixels=options.max_pixels)
    except ImageDecodeError as exc:
        return Skipped(path, str(exc)), None
    pixels = pixels_from_image(decoded.image, options.max_side)
    loaded = Loaded(digest, data, decoded.width, decoded.height, decoded.format, name, source)
    loaded.meta = dict(item.meta)
    return loaded, pixels


def collate(pairs: Sequence[tuple[Loaded | Skipped, torch.Tensor | None]]) -> LoadedBatch:
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, (_, pixels) in enumerate(pairs):
        if pixels is not None:
            by_shape.setdefault(tuple(pixels.shape), []).append(position)
    groups = [
        (positions, torch.stack([pairs[p][1] for p in positions]))  # type: ignore[misc]
        for positions in by_shape.values()
    ]
    return LoadedBatch([result for result, _ in pairs], groups)


class _Files(Dataset[tuple[Loaded | Skipped, torch.Tensor | None]]):
    def __init__(self, items: Sequence[SourceItem], options: LoadOptions, known: Callable[[str], bool]):
        self.items, self.options, self.known = items, options, known

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Loaded | Skipped, torch.Tensor | None]:
        return load_item(self.items[index], self.options, self.known)


def batch_loader(
    items: Sequence[SourceItem],
    options: LoadOptions,
    *,
    batch_size: int,
    workers: int,
    known: Callable[[str], bool] = lambda _digest: False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """Batches of loaded files in input order, `workers` processes reading ahead (two batches each).

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
    )


def item_paths(paths: Sequence[Path]) -> list[SourceItem]:
    return [SourceItem(path) for path in paths]

"""The bulk job's stages after loading: pixels onto the model's device, the forward pass, and the writes.

Four stages run at once on consecutive batches: worker processes load batches ahead (loading.py); a
thread moves the next one to the device (nvJPEG decode of the JPEGs it may take, resize, one copy per
shape from pinned memory, on its own CUDA stream); the caller's thread regroups images by shape
(ShapeBatcher) and queues forward passes without waiting for them; a writer thread waits for the vectors
and commits each forward batch (one database transaction, one FAISS add). So on a GPU host the forward
pass is rarely waiting, and on a CPU host it has the cores to itself but for decoding.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from app.files.decoding import Skipped
from app.jobs.loading import Loaded, LoadedBatch
from models import Encoder, ImageDecodeError, ImageEncoder, decode_image
from models.device_decode import decode_jpegs, orient, resize_pixels
from models.preprocess import pixels_from_image


@dataclass
class DeviceBatch:
    """New images of one loaded batch with their pixels on the model's device, and what was dropped."""

    items: list[Loaded]
    pixels: list[torch.Tensor]  # uint8 (3, h, w) of each item
    files: int
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    ready: torch.cuda.Event | None = None  # recorded on the transfer stream once the pixels are there


class DeviceStage:
    """LoadedBatch -> DeviceBatch, in one thread (it also drops repeats of a file seen earlier in the run)."""

    def __init__(self, encoder: ImageEncoder, *, max_pixels: int) -> None:
        self.encoder = encoder
        self.device = encoder.device
        self.max_pixels = max_pixels
        self.seen: set[str] = set()
        self._local = threading.local()  # a CUDA stream per thread running this stage (see ahead)

    def __call__(self, batch: LoadedBatch) -> DeviceBatch:
        stream = self._stream()
        context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with context, torch.inference_mode():
            out = self._prepare(batch)
            if stream is not None:
                out.ready = torch.cuda.Event()
                out.ready.record(stream)
        return out

    def _stream(self) -> torch.cuda.Stream | None:
        if self.device.type != "cuda":
            return None
        if not hasattr(self._local, "stream"):
            self._local.stream = torch.cuda.Stream(self.device)
        stream: torch.cuda.Stream = self._local.stream
        return stream

    def _prepare(self, batch: LoadedBatch) -> DeviceBatch:
        out = DeviceBatch([], [], files=len(batch.results))
        pixels: dict[int, torch.Tensor] = {}  # position in batch.results -> (3, h, w) on the device
        for positions, stacked in batch.groups:
            moved = stacked.to(self.device, non_blocking=True)
            pixels.update(zip(positions, moved.unbind(0), strict=True))
        on_device = [
            p for p, result in enumerate(batch.results) if isinstance(result, Loaded) and result.on_device
        ]
        pixels.update(self._decode_on_device(batch, on_device))
        kept: list[torch.Tensor] = []
        for position, result in enumerate(batch.results):
            if isinstance(result, Skipped):
                if result.duplicate:
                    out.duplicates += 1
                else:
                    out.skipped.append(result)
                continue
            if result.sha256 in self.seen:
                out.duplicates += 1
                continue
            tensor = pixels.get(position)
            if tensor is None:  # nvJPEG refused it: PIL decides, exactly as the CPU route would have
                try:
                    tensor = self._decode_on_cpu(result)
                except ImageDecodeError as exc:
                    out.skipped.append(Skipped(Path(result.source_path or result.original_name), str(exc)))
                    continue
            self.seen.add(result.sha256)
            out.items.append(result)
            kept.append(tensor)
        out.pixels = kept
        return out

    def _decode_on_device(self, batch: LoadedBatch, positions: list[int]) -> dict[int, torch.Tensor]:
        """nvJPEG in one call, then EXIF orientation and resize batched per source size."""
        if not positions:
            return {}
        results = [batch.results[p] for p in positions]
        decoded = decode_jpegs([r.data for r in results if isinstance(r, Loaded)], self.device)
        by_source: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
        for position, result, tensor in zip(positions, results, decoded, strict=True):
            if tensor is not None and isinstance(result, Loaded):
                by_source.setdefault((*tensor.shape, result.orientation), []).append((position, tensor))
        out: dict[int, torch.Tensor] = {}
        for (*_, orientation), members in by_source.items():
            stacked = orient(torch.stack([tensor for _, tensor in members]), orientation)
            resized = resize_pixels(stacked, self.encoder.max_side)
            out.update(zip([p for p, _ in members], resized.unbind(0), strict=True))
        return out

    def _decode_on_cpu(self, result: Loaded) -> torch.Tensor:
        decoded = decode_image(result.data, max_side=self.encoder.max_side, max_pixels=self.max_pixels)
        return pixels_from_image(decoded.image, self.encoder.max_side).to(self.device)


@dataclass
class Chunk:
    """Images of one shape, embedded in one forward pass and written in one transaction."""

    items: list[Loaded]
    pixels: torch.Tensor  # uint8 (len(items), 3, h, w)


class ShapeBatcher:
    """Regroups images across loaded batches into forward batches of one shape and full size.

    A loaded batch mixes shapes (portrait, landscape…), so cutting it by shape gives batches of ever other
    sizes, and on CUDA every new input size costs cuDNN a new execution plan (seconds for Lite0, measured
    on an H100: the job fell to 78 img/s). Full batches per shape, and padding the last ones up to the
    batch size (``pad``), keep one input size per shape. At most ``max_waiting`` images wait here: past it,
    the longest queue goes as it is, so collections with many odd shapes stay within memory.
    """

    def __init__(self, batch_size: int, *, pad: bool, max_waiting: int) -> None:
        self.batch_size, self.pad, self.max_waiting = batch_size, pad, max_waiting
        self.queues: dict[tuple[int, ...], list[tuple[Loaded, torch.Tensor]]] = {}
        self.waiting = 0

    def add(self, batch: DeviceBatch) -> list[Chunk]:
        chunks: list[Chunk] = []
        for item, pixels in zip(batch.items, batch.pixels, strict=True):
            queue = self.queues.setdefault(tuple(pixels.shape), [])
            queue.append((item, pixels))
            self.waiting += 1
            if len(queue) == self.batch_size:
                chunks.append(self._take(tuple(pixels.shape)))
        while self.waiting > self.max_waiting:
            chunks.append(self._take(max(self.queues, key=lambda shape: len(self.queues[shape]))))
        return chunks

    def flush(self) -> list[Chunk]:
        return [self._take(shape) for shape in list(self.queues) if self.queues[shape]]

    def _take(self, shape: tuple[int, ...]) -> Chunk:
        members = self.queues.pop(shape)
        self.waiting -= len(members)
        return Chunk([item for item, _ in members], torch.stack([pixels for _, pixels in members]))


def wait_for(batch: DeviceBatch, device: torch.device) -> None:
    """Make the compute stream wait for the transfer stream's copies (and keep their memory alive)."""
    if batch.ready is not None:
        stream = torch.cuda.current_stream(device)
        stream.wait_event(batch.ready)
        for tensor in batch.pixels:
            tensor.record_stream(stream)


def embed(encoder: ImageEncoder, chunk: Chunk, *, pad_to: int | None = None) -> np.ndarray:
    """(len(items), dim) vectors; see embed_later."""
    return embed_later(encoder, chunk, pad_to=pad_to)()


def embed_later(
    encoder: ImageEncoder, chunk: Chunk, *, pad_to: int | None = None
) -> Callable[[], np.ndarray]:
    """Queue the forward pass; the returned function waits for the (len(items), dim) vectors. The pixels
    are repeated up to pad_to rows (see ShapeBatcher), whose vectors are dropped: rows do not influence
    each other in an eval-mode forward."""
    pixels = chunk.pixels
    count = len(chunk.items)
    if pad_to is not None and len(pixels) < pad_to:
        pixels = torch.cat([pixels, pixels[-1:].expand(pad_to - len(pixels), *pixels.shape[1:])])
    if isinstance(encoder, Encoder):
        wait = encoder.embed_pixels_later(pixels)
        return lambda: wait()[:count]
    rows = encoder.embed(_pictures(pixels))[:count]  # an autoencoder prepares its own input from pictures
    return lambda: rows


def _pictures(pixels: torch.Tensor) -> list[PILImage.Image]:
    arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return [PILImage.fromarray(array) for array in arrays]


def ahead(
    iterator: Iterator[LoadedBatch], stage: DeviceStage, *, threads: int = 1, depth: int = 2
) -> Iterator[DeviceBatch]:
    """Run stage over iterator in threads of its own, up to depth batches ahead, yielding in order.

    The bulk job uses one thread: on an H100, two measured no faster (4,370 against 4,569 img/s, one run
    each), but the stage is safe to run in several (a CUDA stream per thread).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cbir-device") as pool:
        pending: deque[Future[DeviceBatch]] = deque()
        for batch in iterator:
            pending.append(pool.submit(stage, batch))
            if len(pending) > depth + threads - 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

"""The jobs' embed stage: images regrouped by shape into full forward batches, each queued on the model.

The local run and every Ray actor embed through ``EmbedStage``, so the two make the same forward batches
(one shape each, padded to the batch size on CUDA) and so the same vectors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image as PILImage

from app.jobs.device import DeviceBatch
from app.jobs.records import ImageRecord
from models import Encoder, ImageEncoder

__all__ = ["Chunk", "EmbedStage", "Embedded", "ShapeBatcher", "embed", "embed_later"]

# Around each forward pass (the bulk job's inference gate and meter): called with the number of images.
Slot = Callable[[int], AbstractContextManager[object]]


@dataclass
class Chunk:
    """Images of one shape, embedded in one forward pass and written in one transaction."""

    items: list[ImageRecord]
    pixels: torch.Tensor  # uint8 (len(items), 3, h, w)


@dataclass
class Embedded:
    """A forward batch's records and a function that waits for their (len(items), dim) vectors."""

    items: list[ImageRecord]
    vectors: Callable[[], np.ndarray]

    @classmethod
    def ready(cls, items: list[ImageRecord], vectors: np.ndarray) -> Embedded:
        return cls(items, lambda: vectors)


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
        self.queues: dict[tuple[int, ...], list[tuple[ImageRecord, torch.Tensor]]] = {}
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


class EmbedStage:
    """DeviceBatch -> Embedded forward batches, queued without waiting for their vectors.

    ``max_waiting`` bounds the images held back for a full batch (the local run holds four batches; a Ray
    actor flushes after every batch it is given, so it passes the batch's size).
    """

    def __init__(self, encoder: ImageEncoder, *, max_waiting: int, slot: Slot | None = None) -> None:
        self.encoder = encoder
        cuda = encoder.device.type == "cuda"
        self.pad_to = encoder.batch_size if cuda else None
        self.batcher = ShapeBatcher(encoder.batch_size, pad=cuda, max_waiting=max_waiting)
        self.slot = slot

    def add(self, batch: DeviceBatch) -> list[Embedded]:
        return [self._embed(chunk) for chunk in self.batcher.add(batch)]

    def flush(self) -> list[Embedded]:
        return [self._embed(chunk) for chunk in self.batcher.flush()]

    def _embed(self, chunk: Chunk) -> Embedded:
        around = self.slot(len(chunk.items)) if self.slot is not None else contextlib.nullcontext()
        with around:
            return Embedded(chunk.items, embed_later(self.encoder, chunk, pad_to=self.pad_to))


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

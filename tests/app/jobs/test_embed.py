"""The jobs' regrouping by shape and padded forward passes (app/jobs/embed.py)."""

from __future__ import annotations

import pytest
import torch

from app.jobs.device import DeviceBatch
from app.jobs.embed import Chunk, ShapeBatcher, embed
from app.jobs.records import ImageRecord
from models import Encoder, build_encoder


@pytest.fixture(scope="module")
def tiny_encoder() -> Encoder:
    return build_encoder("tiny_random", "gap", max_side=64, device="cpu")


def loaded(n: int) -> ImageRecord:
    return ImageRecord(f"{n:064x}", b"", 10, 10, "JPEG", f"{n}.jpg", None)


def batch_of(shapes: list[tuple[int, int]], start: int = 0) -> DeviceBatch:
    items = [loaded(start + i) for i in range(len(shapes))]
    pixels = [torch.full((3, h, w), i, dtype=torch.uint8) for i, (h, w) in enumerate(shapes)]
    return DeviceBatch(items, pixels, files=len(shapes))


def test_full_batches_of_one_shape_go_as_soon_as_they_fill() -> None:
    batcher = ShapeBatcher(2, pad=False, max_waiting=100)
    first = batcher.add(batch_of([(4, 6), (6, 4), (4, 6)]))
    assert [tuple(c.pixels.shape) for c in first] == [(2, 3, 4, 6)]
    assert batcher.add(batch_of([(6, 4)], start=3))[0].pixels.shape == (2, 3, 6, 4)
    assert batcher.flush() == [] and batcher.waiting == 0


def test_the_longest_queue_goes_early_when_too_many_images_wait() -> None:
    batcher = ShapeBatcher(8, pad=False, max_waiting=3)
    chunks = batcher.add(batch_of([(4, 6), (4, 6), (6, 4), (5, 5)]))
    assert [len(c.items) for c in chunks] == [2] and batcher.waiting == 2
    assert sorted(len(c.items) for c in batcher.flush()) == [1, 1]


def test_padding_rows_change_no_vector(tiny_encoder: Encoder) -> None:
    pixels = torch.randint(0, 256, (3, 3, 48, 64), dtype=torch.uint8)
    chunk = Chunk([loaded(i) for i in range(3)], pixels)
    padded = embed(tiny_encoder, chunk, pad_to=8)
    assert padded.shape == (3, tiny_encoder.dim)
    torch.testing.assert_close(torch.from_numpy(padded), torch.from_numpy(embed(tiny_encoder, chunk)))

"""The one read-and-embed loop of learning and evaluation: order, batches, what is put aside, progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.files.decoding import list_files
from app.jobs.records import ImageRecord
from app.learn.embedding import Embedded, Reading, embed_files
from tests.helpers.images import image_bytes


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven pictures, one of them twice, and a file that is not a picture, in a known order."""
    for seed in range(7):
        (tmp_path / f"{seed}.jpg").write_bytes(image_bytes(seed))
    (tmp_path / "9-copy-of-3.jpg").write_bytes(image_bytes(3))
    (tmp_path / "notes.txt").write_text("not a picture")
    return tmp_path


def names(pictures: list[ImageRecord]) -> list[str]:
    return [picture.original_name for picture in pictures]


def read(
    paths: list[Path], reading: Reading, progress: list[tuple[int, int]] | None = None, **options: Any
) -> list[Embedded[list[str]]]:
    """Every batch of embed_files over ``paths``, with the picture names as the embedding."""
    on_progress = None if progress is None else lambda *done: progress.append(done)
    batches = embed_files(
        paths,
        names,
        max_side=64,
        max_pixels=10**6,
        workers=2,
        reading=reading,
        on_progress=on_progress,
        **options,
    )
    return list(batches)


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_batches_keep_the_input_order_and_say_where_each_picture_came_from(
    folder: Path, batch_size: int
) -> None:
    paths = list_files(folder)
    reading = Reading()
    progress: list[tuple[int, int]] = []
    batches = read(paths, reading, progress, batch_size=batch_size)
    readable = [p.name for p in paths if p.suffix == ".jpg"]
    assert [name for batch in batches for name in batch.output] == readable
    assert [paths[i].name for batch in batches for i in batch.positions] == readable
    assert all(len(batch.pictures) == batch_size for batch in batches[:-1])
    assert [s.path.name for s in reading.skipped] == ["notes.txt"]
    assert (reading.files, reading.embedded, reading.duplicates) == (len(paths), len(readable), 0)
    assert progress[-1] == (len(paths), len(readable))
    assert [done for done, _ in progress] == sorted({done for done, _ in progress})


def test_distinct_drops_a_picture_identical_to_an_earlier_one(folder: Path) -> None:
    reading = Reading()
    kept = [name for batch in read(list_files(folder), reading, distinct=True) for name in batch.output]
    assert "3.jpg" in kept and "9-copy-of-3.jpg" not in kept
    assert reading.duplicates == 1 and reading.embedded == len(kept) == 7


def test_nothing_readable_yields_nothing_and_lists_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("no")
    reading = Reading()
    progress: list[tuple[int, int]] = []
    batches = read(list_files(tmp_path), reading, progress)
    assert batches == [] and len(reading.skipped) == 1 and progress == [(1, 0)]

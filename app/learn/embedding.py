"""The one loop that learning and evaluation run over a user's files: read, put aside, batch, embed.

`cbir fit`, `cbir finetune`, `cbir train autoencoder`, `cbir evaluate` (folders and ground truth) and
`cbir optimize` all read pictures exactly as the bulk job does (same decoder and limits, a thread pool that
overlaps decoding with the model) and differ only in what they make of a batch: vectors, feature maps,
augmented views, network inputs. Each passes that step as ``embed``; the files that cannot be read are listed
in a Reading, never silently lost, and progress is reported as (files read, pictures embedded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from app.files.decoding import Skipped
from app.jobs.reader import load_files
from app.jobs.records import ImageRecord
from models import ImageEncoder

__all__ = ["Embedded", "Reading", "embed_files", "embed_vectors"]

T = TypeVar("T")


@dataclass
class Reading:
    """What became of the files: how many were read, and which were put aside and why."""

    files: int = 0
    embedded: int = 0
    duplicates: int = 0  # identical to an earlier picture of the same run (with distinct=True)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Embedded(Generic[T]):
    positions: list[int]  # of the pictures in the paths given, in order
    pictures: list[ImageRecord]
    output: T  # what ``embed`` made of the pictures


def embed_files(
    paths: Sequence[Path],
    embed: Callable[[list[ImageRecord]], T],
    *,
    max_side: int,
    max_pixels: int,
    workers: int,
    batch_size: int = 1,
    distinct: bool = False,
    reading: Reading | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[Embedded[T]]:
    """Batches of up to ``batch_size`` readable pictures of ``paths``, in input order, each with ``embed``'s
    output; ``distinct`` drops a picture identical to an earlier one (an identical file would be its own
    negative, or weigh twice). ``on_progress(files read, pictures embedded)`` follows each batch."""
    reading = reading if reading is not None else Reading()
    seen: set[str] = set()
    positions: list[int] = []
    pictures: list[ImageRecord] = []
    reported = 0

    def report() -> None:
        nonlocal reported
        reported = reading.files
        if on_progress is not None:
            on_progress(reading.files, reading.embedded)

    loaded = load_files(paths, max_side=max_side, max_pixels=max_pixels, workers=workers)
    for position, item in enumerate(loaded):
        reading.files += 1
        if isinstance(item, Skipped):
            reading.skipped.append(item)
        elif distinct and item.sha256 in seen:
            reading.duplicates += 1
        else:
            seen.add(item.sha256)
            positions.append(position)
            pictures.append(item)
        if len(pictures) >= batch_size:
            batch = Embedded(positions, pictures, embed(pictures))
            positions, pictures = [], []
            reading.embedded += len(batch.pictures)
            yield batch
            report()
    if pictures:
        batch = Embedded(positions, pictures, embed(pictures))
        reading.embedded += len(batch.pictures)
        yield batch
    if reading.files != reported:
        report()


def embed_vectors(
    encoder: ImageEncoder,
    paths: Sequence[Path],
    source: Path,
    *,
    max_pixels: int,
    workers: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[int], Reading]:
    """(N, D) descriptors of the readable pictures among ``paths`` (found under ``source``), their positions
    in it and what was put aside, embedded as the service embeds (the encoder's batch size); ValueError if
    none is readable."""
    reading = Reading()
    vectors: list[np.ndarray] = []
    positions: list[int] = []
    for batch in embed_files(
        paths,
        lambda pictures: encoder.embed([picture.decoded.image for picture in pictures]),
        max_side=encoder.max_side,
        max_pixels=max_pixels,
        workers=workers,
        batch_size=encoder.batch_size,
        reading=reading,
        on_progress=on_progress,
    ):
        vectors.append(batch.output)
        positions.extend(batch.positions)
    if not vectors:
        raise ValueError(f"no readable image under {source}")
    return np.concatenate(vectors), positions, reading

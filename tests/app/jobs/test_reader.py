"""The jobs' reader: one record per file from the thread and the process flavours alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.files.decoding import MAX_FILE_BYTES, Skipped, sha256_of
from app.jobs.reader import ReadOptions, batch_loader, load_files, read_file
from app.jobs.records import ImageRecord
from app.jobs.sources import SourceItem
from models.preprocess import pixels_from_image
from tests.helpers.images import image_bytes

SIDE = 64


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for seed, size in enumerate([(96, 64), (64, 96), (120, 50)]):
        path = tmp_path / f"p{seed}.jpg"
        path.write_bytes(image_bytes(seed, size=size))
        paths.append(path)
    (tmp_path / "notes.txt").write_text("not an image")
    return [*paths, tmp_path / "notes.txt", tmp_path / "missing.jpg"]


def test_both_flavours_make_the_same_records(files: list[Path]) -> None:
    threaded = list(load_files(files, max_side=SIDE, max_pixels=10**8, workers=2))
    loader = batch_loader([SourceItem(p) for p in files], ReadOptions(SIDE, 10**8), batch_size=2, workers=0)
    batches = list(loader)
    processed = [result for batch in batches for result in batch.results]
    assert len(threaded) == len(processed) == len(files)
    for ours, theirs in zip(threaded, processed, strict=True):
        assert type(ours) is type(theirs)
        if isinstance(ours, ImageRecord) and isinstance(theirs, ImageRecord):
            facts = ("sha256", "width", "height", "format", "original_name", "source_path", "meta")
            assert [getattr(ours, f) for f in facts] == [getattr(theirs, f) for f in facts]
            assert theirs.picture is None and ours.picture is not None
    # the process flavour's pixels are the thread flavour's picture, as the upload path would prepare it
    pixels: dict[int, torch.Tensor] = {}
    for number, batch in enumerate(batches):  # positions are within a batch of 2
        for positions, stack in batch.groups:
            pixels.update((2 * number + p, tensor) for p, tensor in zip(positions, stack, strict=True))
    for position, record in enumerate(threaded):
        if isinstance(record, ImageRecord):
            torch.testing.assert_close(pixels[position], pixels_from_image(record.decoded.image, SIDE))


def test_what_a_file_is_skipped_for(files: list[Path], tmp_path: Path) -> None:
    options = ReadOptions(SIDE, 10**8)
    text, missing = (read_file(SourceItem(p), options)[0] for p in files[3:])
    assert isinstance(text, Skipped) and not text.duplicate
    assert isinstance(missing, Skipped) and missing.reason.startswith("cannot read")
    known = sha256_of(files[0].read_bytes())
    again, pixels = read_file(SourceItem(files[0]), options, known=lambda digest: digest == known)
    assert isinstance(again, Skipped) and again.duplicate and pixels is None
    big = tmp_path / "big.jpg"
    with big.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    assert "byte limit" in read_file(SourceItem(big), options)[0].reason  # type: ignore[union-attr]


def test_a_source_item_brings_its_name_and_metadata(files: list[Path]) -> None:
    record, pixels = read_file(
        SourceItem(files[0], {"sku": "A1"}, name="shop/p0.jpg"), ReadOptions(SIDE, 10**8)
    )
    assert isinstance(record, ImageRecord) and pixels is not None
    assert (record.original_name, record.meta, record.source_path) == (
        "shop/p0.jpg",
        {"sku": "A1"},
        str(files[0].resolve()),
    )
    with pytest.raises(ValueError, match="read as pixels"):
        record.decoded  # noqa: B018

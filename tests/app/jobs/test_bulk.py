"""The bulk job's pipeline: same vectors as uploads, manifests' metadata, skips, reruns and interruptions."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sqlalchemy import func, select

from app.collection.facade import Collection
from app.config import Settings
from app.db.tables import Image
from app.jobs import bulk
from app.observability import InferenceMeter
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes


def stored(collection: Collection) -> dict[str, tuple[np.ndarray, dict, int, int]]:
    with collection.sessions() as session:
        rows = session.execute(select(Image.sha256, Image.vector, Image.meta, Image.width, Image.height))
        return {r.sha256: (np.frombuffer(r.vector, "<f4"), r.meta, r.width, r.height) for r in rows}


def encoded(picture: PILImage.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Photos of several sizes and formats, a file that is not an image and a truncated JPEG."""
    root = tmp_path / "photos"
    root.mkdir()
    for seed in range(9):
        size = [(96, 64), (64, 96), (120, 50)][seed % 3]
        (root / f"p{seed}.jpg").write_bytes(image_bytes(seed, size=size))
    (root / "p9.png").write_bytes(image_bytes(9, fmt="PNG"))
    (root / "notes.txt").write_text("not an image")
    (root / "cut.jpg").write_bytes(image_bytes(42, size=(300, 200))[:500])
    return root


def test_bulk_vectors_equal_what_an_upload_of_the_same_file_gets(settings: Settings, photos: Path) -> None:
    collection = open_collection(settings)
    report = bulk.index_directory(collection, photos)
    assert (report.added, report.duplicates, len(report.skipped)) == (10, 0, 2)
    rows = stored(collection)
    for path in sorted(photos.glob("p*")):
        data = path.read_bytes()
        vector, _, width, height = rows[collection_digest(data)]
        np.testing.assert_allclose(vector, collection.embed_query(data), atol=1e-6)
        with PILImage.open(path) as original:
            assert (width, height) == original.size
    assert collection.index.ntotal == 10
    collection.close()


def collection_digest(data: bytes) -> str:
    from app.files.decoding import sha256_of

    return sha256_of(data)


def test_skips_are_listed_with_reasons_and_a_rerun_adds_nothing(settings: Settings, photos: Path) -> None:
    (photos / "again.jpg").write_bytes((photos / "p0.jpg").read_bytes())
    collection = open_collection(settings)
    first = bulk.index_directory(collection, photos)
    assert (first.added, first.duplicates) == (10, 1)
    reasons = {skipped.path.name: skipped.reason for skipped in first.skipped}
    assert set(reasons) == {"notes.txt", "cut.jpg"}
    assert "not an image" in reasons["notes.txt"] and "truncated" in reasons["cut.jpg"].lower()
    again = bulk.index_directory(collection, photos)
    assert (again.added, again.duplicates, len(again.skipped)) == (0, 11, 2)
    collection.close()


def test_a_manifest_puts_its_columns_into_the_metadata(settings: Settings, photos: Path) -> None:
    manifest = photos / "catalogue.csv"
    manifest.write_text("path,sku,price\np0.jpg,A-1,10\np1.jpg,B-2,20\nmissing.jpg,C-3,30\n,D-4,40\n")
    collection = open_collection(settings)
    report = bulk.index_source(collection, manifest)
    assert report.added == 2
    assert sorted(s.reason.split(":")[0] for s in report.skipped) == ["cannot read", "line 5"]
    metas = sorted(meta["sku"] for _, meta, _, _ in stored(collection).values())
    assert metas == ["A-1", "B-2"]
    collection.close()


def test_an_interrupted_run_is_rerun_without_duplicates(settings: Settings, tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for seed in range(40):
        (many / f"{seed:02d}.jpg").write_bytes(image_bytes(seed))
    collection = open_collection(settings)

    def stop_midway(done: int, _added: int) -> None:
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bulk.index_directory(collection, many, on_progress=stop_midway)
    collection.close()
    partial = len(stored(reopened := open_collection(settings)))
    assert 0 < partial < 40  # what was embedded before the interruption is committed, and no more
    report = bulk.index_directory(reopened, many)
    assert report.added == 40 - partial and report.duplicates == partial
    with reopened.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 40
    assert reopened.index.ntotal == 40
    reopened.close()


def _awkward_jpegs(root: Path) -> None:
    """JPEGs nvJPEG may refuse or read differently: CMYK, progressive, grey, EXIF-rotated, cut short."""
    picture = PILImage.open(io.BytesIO(image_bytes(7, size=(384, 256)))).convert("RGB")
    exif = PILImage.Exif()
    exif[0x0112] = 6
    (root / "cmyk.jpg").write_bytes(encoded(picture.convert("CMYK"), "JPEG"))
    (root / "progressive.jpg").write_bytes(encoded(picture.rotate(90, expand=True), "JPEG", progressive=True))
    (root / "grey.jpg").write_bytes(encoded(picture.convert("L"), "JPEG"))
    flipped = picture.transpose(PILImage.Transpose.FLIP_TOP_BOTTOM)
    (root / "rotated.jpg").write_bytes(encoded(flipped, "JPEG", exif=exif.tobytes()))
    full = encoded(picture.resize((200, 300)), "JPEG")
    (root / "short.jpg").write_bytes(full[: len(full) * 2 // 3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decoding_accepts_what_the_cpu_accepts_with_close_vectors(
    settings: Settings, photos: Path, tmp_path: Path
) -> None:
    _awkward_jpegs(photos)
    results = {}
    for device in ("cpu", "cuda"):
        run = settings.model_copy(update={"device": device, "data_dir": tmp_path / device})
        collection = open_collection(run)
        report = bulk.index_directory(collection, photos)
        results[device] = (report, stored(collection))
        collection.close()
    (cpu_report, cpu_rows), (gpu_report, gpu_rows) = results["cpu"], results["cuda"]
    assert sorted(s.path.name for s in gpu_report.skipped) == sorted(s.path.name for s in cpu_report.skipped)
    assert set(gpu_rows) == set(cpu_rows) and len(gpu_rows) == 14
    for digest, (vector, _, width, height) in gpu_rows.items():
        cpu_vector, _, cpu_width, cpu_height = cpu_rows[digest]
        assert (width, height) == (cpu_width, cpu_height)
        assert float(vector @ cpu_vector) > 0.98


class CountingMeter(InferenceMeter):
    """Counts the pictures that went through the encoder."""

    def __init__(self) -> None:
        self.images = 0

    @contextmanager
    def running(self, images: int) -> Iterator[None]:
        self.images += images
        yield


def test_each_distinct_picture_is_embedded_once_and_a_rerun_embeds_none(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "repeats"
    folder.mkdir()
    for seed in range(6):
        (folder / f"{seed}.jpg").write_bytes(image_bytes(seed))
    for copy in range(3):  # the same bytes under other names, in the same run
        (folder / f"z-copy{copy}.jpg").write_bytes(image_bytes(2))
    collection = open_collection(settings)
    collection.meter = meter = CountingMeter()
    first = bulk.index_directory(collection, folder)
    assert (first.added, first.duplicates, meter.images) == (6, 3, 6)
    again = bulk.index_directory(collection, folder)
    assert (again.added, again.duplicates, meter.images) == (0, 9, 6)  # known by hash: not even decoded
    assert collection.index.ntotal == 6
    collection.close()


def test_a_picture_stored_after_the_job_listed_the_collection_is_not_added_twice(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload that lands while the job runs: the job's list of known hashes is stale, the database's
    own check at ingest must still refuse the second copy."""
    folder = tmp_path / "late"
    folder.mkdir()
    for seed in range(4):
        (folder / f"{seed}.jpg").write_bytes(image_bytes(seed))
    collection = open_collection(settings)
    uploaded = collection.add_upload(image_bytes(1), "uploaded.jpg").image.id
    monkeypatch.setattr(collection, "known_sha256", set)  # as listed before the upload
    report = bulk.index_directory(collection, folder)
    assert (report.added, report.duplicates) == (3, 1)
    with collection.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 4
    assert collection.index.ntotal == 4 and uploaded in set(collection.index.ids().tolist())
    collection.close()

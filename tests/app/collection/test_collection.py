"""Crash safety of the collection: the index is reconciled with the database, which is the source of truth."""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from app.collection.facade import Collection
from app.config import Settings
from app.errors import CollectionMismatchError
from app.files.decoding import sha256_of
from app.gate import ServiceBusyError
from app.jobs.reindex import reindex_collection
from index import VectorIndex
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes


def add(collection: Collection, seeds: range) -> list[int]:
    return [collection.add_upload(image_bytes(seed), f"{seed}.jpg").image.id for seed in seeds]


def test_rows_committed_but_index_not_saved_are_replayed(settings: Settings) -> None:
    collection = open_collection(settings)
    add(collection, range(3))
    # A crash after the database commit but before the index save: ingest without save_index.
    items = [collection.prepare_upload(image_bytes(seed), f"{seed}.jpg") for seed in range(3, 6)]
    collection.ingest(items, collection.embed_prepared(items))
    collection.close()

    reopened = open_collection(settings)
    assert reopened.index.ntotal == 6
    assert sorted(reopened.index.ids().tolist()) == list(range(1, 7))
    top = reopened.search_image(image_bytes(4), 1)[0]
    assert top.image.original_name == "4.jpg"
    reopened.close()


def test_stray_index_ids_are_dropped_and_a_lost_index_is_rebuilt(settings: Settings) -> None:
    collection = open_collection(settings)
    ids = add(collection, range(4))
    collection.index.add(np.array([999], dtype=np.int64), collection.index.reconstruct(ids[0])[None, :])
    collection.save_index()
    collection.close()

    reopened = open_collection(settings)
    assert 999 not in reopened.index
    assert reopened.index.ntotal == 4
    reopened.close()

    settings.index_path.unlink()
    rebuilt = open_collection(settings)
    assert sorted(rebuilt.index.ids().tolist()) == sorted(ids)
    rebuilt.close()


def test_corrupt_index_file_is_rebuilt_from_the_database(settings: Settings) -> None:
    collection = open_collection(settings)
    ids = add(collection, range(3))
    collection.close()
    settings.index_path.write_bytes(b"garbage")
    reopened = open_collection(settings)
    assert sorted(reopened.index.ids().tolist()) == sorted(ids)
    reopened.close()


def test_another_encoder_is_refused_with_what_to_do(settings: Settings) -> None:
    collection = open_collection(settings)
    add(collection, range(2))
    collection.close()
    other = settings.model_copy(update={"head": "mac"})
    with pytest.raises(CollectionMismatchError, match="cbir reindex"):
        open_collection(other)


def test_index_file_from_another_encoder_is_refused(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    VectorIndex(8, "someone-else").save(settings.index_path)
    with pytest.raises(CollectionMismatchError, match="cbir reindex"):
        open_collection(settings)


def test_duplicates_within_one_batch_are_stored_once(settings: Settings) -> None:
    collection = open_collection(settings)
    items = [
        collection.prepare_upload(image_bytes(1), "a.jpg"),
        collection.prepare_upload(image_bytes(1), "b.jpg"),
    ]
    results = collection.ingest(items, collection.embed_prepared(items))
    assert [r.duplicate for r in results] == [False, True]
    assert results[0].image.id == results[1].image.id
    assert collection.count() == 1
    assert collection.index.ntotal == 1
    collection.close()


def test_a_running_service_sees_images_another_process_indexed(settings: Settings) -> None:
    service = open_collection(settings)
    add(service, range(2))
    bulk_job = open_collection(settings)  # e.g. `cbir index` while `cbir serve` runs
    [new_id] = add(bulk_job, range(2, 3))
    bulk_job.close()
    assert new_id not in service.index
    top = service.search_image(image_bytes(2), 1)[0]
    assert top.image.id == new_id
    assert service.stats()["indexed"] == 3
    service.close()


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_crash_between_file_and_commit_is_settled_at_the_next_open(settings: Settings) -> None:
    collection = open_collection(settings)
    [kept_id] = add(collection, range(1))
    files = collection.files
    # Staged by a writer that died before its commit: no row, so the file goes.
    uncommitted = files.stage("ab" * 32, "JPEG", image_bytes(7))
    # Staged by a writer that died after its commit but before publishing: the file takes its place.
    item = collection.prepare_upload(image_bytes(8), "8.jpg")
    [row] = [a.image for a in collection.ingest([item], collection.embed_prepared([item]))]
    files.path_for(row.sha256, row.format).rename(files.root / "committed.tmp")
    staged = files.stage(row.sha256, row.format, image_bytes(8))
    assert uncommitted is not None and staged is not None
    dead = _exited_pid()
    for path in (uncommitted, staged):
        path.rename(path.with_name(path.name.replace(f"-{os.getpid()}-", f"-{dead}-")))
    (files.root / "committed.tmp").unlink()
    # A live writer's pending file is left alone; a final file no row owns goes.
    live = files.stage("cd" * 32, "PNG", b"being written")
    stray = files.write("ef" * 32, "JPEG", image_bytes(9))
    assert live is not None

    published, removed = collection.sweep_orphans()
    assert (published, removed) == (1, 2)
    assert files.path_for(row.sha256, row.format).read_bytes() == image_bytes(8)
    assert not stray.exists()
    assert live.exists()
    assert not list(files.root.rglob(f".pending-{dead}-*"))
    assert collection.file_path(collection.get(kept_id)).exists()
    collection.close()


def test_an_upload_embedded_before_an_encoder_swap_is_refused_not_mislabelled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = open_collection(settings)
    add(service, range(2))
    gem = settings.model_copy(update={"head": "gem"})
    switched_to = reindex_collection(gem).fingerprint  # `cbir reindex` in another process
    embed = service.embed_images

    def embed_then_swap(*args: object, **kwargs: object) -> np.ndarray:
        vectors = embed(*args, **kwargs)  # type: ignore[arg-type]
        service.swaps.switch(switched_to)  # the service follows the reindex while the upload is embedded
        return vectors

    monkeypatch.setattr(service, "embed_images", embed_then_swap)
    with pytest.raises(ServiceBusyError, match=r"while these images were embedded by .*: retry"):
        service.add_upload(image_bytes(7), "7.jpg")
    assert service.encoder.fingerprint == switched_to
    assert service.count() == 2 and service.index.ntotal == 2
    assert service.find_by_sha256(sha256_of(image_bytes(7))) is None
    monkeypatch.undo()
    added = service.add_upload(image_bytes(7), "7.jpg")  # the retry is embedded by the new encoder
    assert added.image.encoder == switched_to
    stored = np.frombuffer(added.image.vector, dtype="<f4")
    picture = Image.open(io.BytesIO(image_bytes(7))).convert("RGB")
    assert np.allclose(stored, service.encoder.embed([picture])[0], atol=1e-6)
    service.close()

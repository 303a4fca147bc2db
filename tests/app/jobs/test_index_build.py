"""`cbir index-build` and index types in the collection: ids and results stay those of the database, a
running service follows a rebuild, and a configured type other than the file's is applied at open."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from app.collection.facade import Collection
from app.config import Settings
from app.jobs.index_build import IndexBuildError, rebuild_index
from app.search.reranking import RerankOptions
from index import VectorIndex
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes

N = 300  # enough to train an IVF (index.factory.MIN_TRAIN_VECTORS)


def fill(collection: Collection, n: int = N) -> np.ndarray:
    for start in range(0, n, 50):
        items = [
            collection.prepare_upload(image_bytes(seed, size=(32, 24)), f"{seed}.jpg")
            for seed in range(start, min(n, start + 50))
        ]
        collection.ingest(items, collection.embed_prepared(items))
    collection.save_index()
    return collection.index.ids()


def top_ids(collection: Collection, queries: np.ndarray) -> list[list[int]]:
    hits = collection.search_vectors(queries, 10, RerankOptions.off())
    return [[hit.image.id for hit in row] for row in hits]


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "hnsw"])
def test_index_build_keeps_ids_and_results(settings: Settings, kind: str) -> None:
    collection = open_collection(settings)
    ids = fill(collection)
    queries = collection.index.reconstruct_batch(ids[::15])
    before = top_ids(collection, queries)
    collection.close()

    seen: list[tuple[int, int]] = []
    report = rebuild_index(
        settings, index_type=kind, on_progress=lambda done, total: seen.append((done, total))
    )
    assert (report.spec.type, report.count, report.previous) == (kind, N, "flat")
    assert seen[0] == (0, N) and seen[-1] == (N, N)
    assert VectorIndex.read_header(settings.index_path)["index_type"] == kind

    configured = settings.model_copy(update={"index_type": kind, "ef_search": N})
    reopened = open_collection(configured)
    assert reopened.index.index_type == kind
    assert reopened.index.build_id == VectorIndex.read_header(settings.index_path)["build_id"], "not rebuilt"
    assert np.array_equal(reopened.index.ids(), ids)
    after = top_ids(reopened, queries)
    if kind == "ivf_pq":  # compressed vectors score approximately (recall: tests/index/test_types.py)
        assert all(len(row) == 10 and set(row) <= set(ids.tolist()) for row in after)
    else:
        assert after == before
    reopened.close()


def test_a_running_service_follows_index_build(settings: Settings) -> None:
    collection = open_collection(settings)
    fill(collection)
    rebuild_index(settings, index_type="hnsw")
    added = collection.add_upload(image_bytes(5000), "new.jpg").image.id
    assert VectorIndex.read_header(settings.index_path)["index_type"] == "hnsw", "the new build is kept"

    collection.catch_up()
    assert collection._picking_up is not None
    collection._picking_up.join(timeout=60)
    assert collection.index.index_type == "hnsw"
    assert added in collection.index, "rows committed after the build read them are replayed"
    collection.save_index()
    assert VectorIndex.read_header(settings.index_path)["ntotal"] == N + 1
    assert collection.search_image(image_bytes(5000), 1)[0].image.id == added
    collection.close()


def test_configured_type_other_than_the_files_is_rebuilt_at_open(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    collection = open_collection(settings)
    ids = fill(collection)
    collection.close()
    configured = settings.model_copy(update={"index_type": "ivf_flat"})
    with caplog.at_level(logging.WARNING, logger="cbir.collection"):
        rebuilt = open_collection(configured)
    assert "is flat but CBIR_INDEX_TYPE=ivf_flat: rebuilding" in caplog.text
    assert rebuilt.index.index_type == "ivf_flat" and np.array_equal(rebuilt.index.ids(), ids)
    build = rebuilt.index.build_id
    rebuilt.close()
    assert VectorIndex.read_header(settings.index_path)["build_id"] == build, "saved once"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cbir.collection"):
        auto = open_collection(settings)  # auto: flat for this size, but the file is kept
    assert auto.index.index_type == "ivf_flat" and auto.index.build_id == build
    assert "the automatic choice is flat: run `cbir index-build`" in caplog.text
    auto.close()


def test_index_build_of_an_empty_collection_says_what_to_do(settings: Settings) -> None:
    with pytest.raises(IndexBuildError, match="holds no vectors: add images"):
        rebuild_index(settings)


def test_deleted_images_an_hnsw_index_still_holds_are_counted_until_index_build(settings: Settings) -> None:
    hnsw = settings.model_copy(update={"index_type": "hnsw"})
    collection = open_collection(hnsw)
    ids = fill(collection, 20)
    assert collection.index.index_type == "hnsw" and collection.stats()["removed_entries"] == 0
    for image_id in ids[:3]:
        collection.delete(int(image_id))
    assert collection.stats()["removed_entries"] == 3 and collection.stats()["indexed"] == 17
    collection.save_index()
    collection.close()

    rebuild_index(hnsw)
    reopened = open_collection(hnsw)
    assert reopened.stats()["removed_entries"] == 0 and reopened.stats()["indexed"] == 17
    reopened.close()


def test_index_build_rebuilds_the_milvus_store_from_the_database(settings: Settings) -> None:
    settings = settings.model_copy(update={"vector_store": "milvus"})
    collection = open_collection(settings)
    ids = fill(collection, 60)
    before = top_ids(collection, collection.index.reconstruct_batch(ids[:5]))
    collection.index.remove(ids[:30])  # the store lost half of its vectors (a wiped Milvus volume, say)
    collection.close()

    report = rebuild_index(settings)

    assert report.count == 60 and "Milvus HNSW" in report.description
    reopened = open_collection(settings)
    assert np.array_equal(reopened.index.ids(), ids)
    assert top_ids(reopened, reopened.index.reconstruct_batch(ids[:5])) == before
    with reopened.sessions() as session:
        from app.db.changes import INDEX_REBUILD, changes_after

        assert [entry.op for entry in changes_after(session, 0)][-1] == INDEX_REBUILD
    reopened.close()

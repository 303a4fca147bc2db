"""Every registered vector store keeps the same contract (index/base.py); a new store is covered by being
registered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import VectorIndexError, VectorStore, available_stores, register_store
from index.base import build_store
from tests.helpers.stores import make_store
from tests.helpers.vectors import DIM, FINGERPRINT, unit_vectors


@pytest.fixture(params=available_stores())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    return make_store(request.param, tmp_path)


def test_add_search_remove_count_and_ids(store: VectorStore) -> None:
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 50)
    ids = np.arange(100, 150, dtype=np.int64)
    store.add(ids, vectors)
    assert isinstance(store, VectorStore)
    assert store.count() == 50
    assert store.ids().tolist() == ids.tolist()
    assert 120 in store and 99 not in store

    scores, found = store.search(vectors[:3], 5)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (3, 5)
    assert found[:, 0].tolist() == [100, 101, 102]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first

    assert store.remove([100, 101, 999]) == 2
    assert store.remove([100]) == 0  # idempotent
    assert store.count() == 48
    _, found = store.search(vectors[:1], 48)
    assert 100 not in found and found.shape == (1, 48) and (found >= 0).all()  # still k, deleted never
    assert np.allclose(store.reconstruct_batch([103]), vectors[3:4], atol=1e-6)
    with pytest.raises(KeyError):
        store.reconstruct_batch([100])


def test_allowed_ids_restrict_the_answer_and_still_fill_k(store: VectorStore) -> None:
    rng = np.random.default_rng(8)
    vectors = unit_vectors(rng, 40)
    store.add(np.arange(1, 41, dtype=np.int64), vectors)
    allowed = np.array([5, 9, 17, 33, 1000], dtype=np.int64)  # 1000 is not stored
    _, found = store.search(vectors[:2], 3, allowed_ids=allowed)
    assert found.shape == (2, 3)
    assert set(found.ravel().tolist()) <= {5, 9, 17, 33}
    # The best allowed by exact inner product.
    exact = vectors[:2] @ vectors[[4, 8, 16, 32]].T
    assert found[:, 0].tolist() == [[5, 9, 17, 33][j] for j in exact.argmax(axis=1)]
    _, few = store.search(vectors[:1], 10, allowed_ids=allowed)
    assert sorted(few[few >= 0].tolist()) == [5, 9, 17, 33]


def test_an_id_already_stored_is_refused(store: VectorStore) -> None:
    vectors = unit_vectors(np.random.default_rng(9), 2)
    store.add(np.array([1], np.int64), vectors[:1])
    with pytest.raises(ValueError, match="already"):
        store.add(np.array([1], np.int64), vectors[1:])
    assert store.count() == 1


def test_registry_refuses_duplicates_and_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_store("faiss")(lambda **_: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one of " + ", ".join(available_stores())):
        build_store("annoy", dim=DIM, fingerprint=FINGERPRINT)
    assert {"faiss", "milvus"} <= set(available_stores())


def test_milvus_refuses_a_collection_of_another_encoder(tmp_path: Path) -> None:
    make_store("milvus", tmp_path).add(np.array([1], np.int64), unit_vectors(np.random.default_rng(1), 1))
    with pytest.raises(VectorIndexError, match="cbir index-build"):
        make_store("milvus", tmp_path, fingerprint="other-encoder")

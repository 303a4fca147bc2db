"""What the Milvus store owes a Milvus server that Milvus Lite (the store the tests run) would forgive.

Milvus Lite answers a search whose HNSW ``ef`` is below k, and searches unflushed vectors as fast as sealed
ones; a Milvus server refuses the first (so ``/search?k=100`` would fail there) and searches a growing
segment by brute force (seconds a query at scale: index/milvus.py). So these tests watch what the store
asks of Milvus, through a recorder around its client, besides checking the answers. The contract shared
with every store is in tests/index/test_stores.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index import VectorStore, available_stores
from index.milvus import MilvusStore
from tests.helpers.stores import make_store
from tests.helpers.vectors import unit_vectors


class Recorder:
    """The client, with the name and keyword arguments of every method called on it, in order."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return attribute(*args, **kwargs)

        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def milvus(tmp_path: Path) -> MilvusStore:
    store = make_store("milvus", tmp_path)
    assert isinstance(store, MilvusStore)
    return store


def recording(store: MilvusStore, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(store._client)
    monkeypatch.setattr(store, "_client", recorder)
    return recorder


def test_every_add_ends_with_a_flush(milvus: MilvusStore, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = recording(milvus, monkeypatch)
    vectors = unit_vectors(np.random.default_rng(3), 20)
    milvus.add(np.arange(1, 21, dtype=np.int64), vectors)
    names = recorder.names()
    assert "insert" in names, names
    last_insert = len(names) - 1 - names[::-1].index("insert")
    assert "flush" in names[last_insert:], f"nothing sealed the inserted vectors: {names}"
    _, found = milvus.search(vectors[:1], 1)
    assert found.tolist() == [[1]]


def test_a_search_for_more_hits_than_ef_search_asks_for_an_ef_of_k(
    milvus: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = unit_vectors(np.random.default_rng(4), 120)
    milvus.add(np.arange(1, 121, dtype=np.int64), vectors)
    recorder = recording(milvus, monkeypatch)
    k = 100  # the API's largest k, above the default ef_search of 64
    scores, found = milvus.search(vectors[:2], k)
    assert found.shape == (2, k) and (found >= 1).all()
    assert found[:, 0].tolist() == [1, 2] and np.all(np.diff(scores, axis=1) <= 1e-6)
    [params] = [kwargs["search_params"] for name, kwargs in recorder.calls if name == "search"]
    assert params["metric_type"] == "IP"
    assert params["params"]["ef"] >= k, f"a Milvus server refuses ef < k: {params}"


@pytest.mark.parametrize("name", available_stores())
def test_an_id_twice_in_one_batch_is_refused(name: str, tmp_path: Path) -> None:
    store: VectorStore = make_store(name, tmp_path)
    vectors = unit_vectors(np.random.default_rng(5), 3)
    with pytest.raises(ValueError, match="duplicate"):
        store.add(np.array([1, 2, 1], np.int64), vectors)
    assert store.count() == 0

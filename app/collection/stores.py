"""Which vector store a collection uses (CBIR_VECTOR_STORE) and how a shared one is opened and rebuilt.

``faiss`` stays where it was (app/collection/index_file.py opens and saves its file, swaps.py follows
it). ``milvus`` is opened here with the settings' URI and collection name, and rebuilt from the rows by
`cbir index-build` (clear, insert in batches, flush: the HNSW index is built on the sealed
segments). Each replica opens the same Milvus collection: a write that reaches it is visible to every
replica's next search (Strong consistency), and the change feed still tells each one what changed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs.index_build import row_batches
from index import StoreUnavailableError, VectorIndex, VectorIndexError, build_store
from index.milvus import MilvusStore

__all__ = ["is_shared", "open_milvus", "rebuild_milvus"]


def is_shared(index: object) -> bool:
    """A store every process shares (nothing to save, no file to follow), as opposed to a FAISS copy."""
    return not isinstance(index, VectorIndex)


def open_milvus(settings: Settings, dim: int, fingerprint: str) -> MilvusStore:
    store = build_store(
        "milvus",
        dim=dim,
        fingerprint=fingerprint,
        uri=settings.milvus_target,
        collection=settings.milvus_collection,
        ef_search=settings.ef_search,
    )
    assert isinstance(store, MilvusStore)
    return store


def rebuild_milvus(
    settings: Settings,
    sessions: sessionmaker[Session],
    dim: int,
    fingerprint: str,
    on_progress: Callable[[int, int], None] | None = None,
    total: int = 0,
) -> MilvusStore:
    """Empty the Milvus collection and fill it again from the encoder's rows; returns the store."""
    try:
        store = open_milvus(settings, dim, fingerprint)
        store.clear()
    except StoreUnavailableError:
        raise
    except VectorIndexError:  # another encoder's (or dimension's) collection: drop it by name, create anew
        from pymilvus import MilvusClient

        MilvusClient(uri=settings.milvus_target).drop_collection(settings.milvus_collection)
        store = open_milvus(settings, dim, fingerprint)
    done = 0
    for ids, vectors in row_batches(sessions, fingerprint, dim):
        store.add(ids, vectors)
        done += len(ids)
        if on_progress is not None:
            on_progress(done, max(total, done))
    return store

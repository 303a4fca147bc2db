"""The vector-store seam: one small protocol, implementations registered by name (as models/heads are).

A store keeps float32 vectors under int64 ids (the database's image ids) and answers inner-product top-k.
It is a cache of the database, which can always rebuild it (`cbir index-build`): nothing here is the source
of truth. Two stores: ``faiss`` (embedded; each process holds its own copy and follows the change feed) and
``milvus`` (a Milvus server or Milvus Lite that every replica shares). To add one: a new module with a
class that satisfies ``VectorStore`` and a ``@register_store("name")`` factory, imported in index/__init__.py.

``search`` returns (scores (n, k') float32, ids (n, k') int64) best first, k' = min(k, count); a row an
approximate store cannot fill is padded with id -1 and score -inf. ``allowed_ids`` restricts the answer to
those ids (a filter applied inside the search, so k results come back whenever k allowed ids are stored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from models.registry import Registry

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]

__all__ = [
    "StoreFactory",
    "VectorStore",
    "available_stores",
    "build_store",
    "register_store",
]


@runtime_checkable
class VectorStore(Protocol):
    dim: int
    fingerprint: str  # the encoder whose vectors it holds

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store vectors under new ids; an id already stored is refused (remove it first)."""
        ...

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ids, ignoring unknown ones (idempotent); returns how many were stored."""
        ...

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None, params: Any = None
    ) -> tuple[Float32Array, Int64Array]: ...

    def count(self) -> int: ...

    def ids(self) -> Int64Array:
        """Every stored id, ascending."""
        ...

    def __contains__(self, image_id: object) -> bool: ...

    def reconstruct_batch(self, ids: np.ndarray | Sequence[int]) -> Float32Array:
        """The stored vectors of ids, in order (re-ranking needs them); KeyError for an unknown id."""
        ...


StoreFactory = Callable[..., VectorStore]
_STORES: Registry[StoreFactory] = Registry(
    "vector store", unknown="unknown vector store {name!r}: one of {known}"
)


def register_store(name: str) -> Callable[[StoreFactory], StoreFactory]:
    """Register ``factory(dim=, fingerprint=, **options) -> VectorStore`` under ``name``."""
    return _STORES.register(name)


def available_stores() -> list[str]:
    return _STORES.names()


def build_store(name: str, *, dim: int, fingerprint: str, **options: Any) -> VectorStore:
    return _STORES.get(name)(dim=dim, fingerprint=fingerprint, **options)

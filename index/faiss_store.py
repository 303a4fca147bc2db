"""``faiss``: the embedded store, today's VectorIndex (index/store.py) seen through the VectorStore protocol.

An adapter rather than a rewrite: the service keeps using VectorIndex (its file format, builds and
tombstones); this adds what the protocol asks that VectorIndex does not yet say in its own words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from index.base import Float32Array, Int64Array, register_store
from index.factory import IndexSpec
from index.store import SearchParams, VectorIndex

__all__ = ["FaissStore"]


class FaissStore(VectorIndex):
    def count(self) -> int:
        return self.ntotal

    def search(  # allowed_ids: keyword-only, as the protocol has it
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        *,
        allowed_ids: np.ndarray | None = None,
    ) -> tuple[Float32Array, Int64Array]:
        if allowed_ids is None:
            return super().search(queries, k, params)
        return _search_among(self, np.asarray(queries, np.float32), k, allowed_ids)


def _search_among(
    store: VectorIndex, queries: np.ndarray, k: int, allowed_ids: np.ndarray
) -> tuple[Float32Array, Int64Array]:
    """Exact top-k among the allowed ids that are stored: scores the allowed vectors directly, which is
    exact for every index type and costs |allowed| x dim per query (a FAISS IDSelector inside the index's
    own search replaces it for large allowed sets)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    q = queries.reshape(1, -1) if queries.ndim == 1 else queries
    stored = np.array([i for i in np.unique(np.asarray(allowed_ids, np.int64)).tolist() if i in store])
    if len(stored) == 0:
        return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
    scores = q @ store.reconstruct_batch(stored).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, : min(int(k), len(stored))]
    return np.take_along_axis(scores, top, axis=1).astype(np.float32), stored[top].astype(np.int64)


@register_store("faiss")
def _faiss(*, dim: int, fingerprint: str, spec: IndexSpec | None = None, **_: Any) -> FaissStore:
    return FaissStore(dim, fingerprint, spec)

"""``faiss``: the embedded store, today's VectorIndex (index/store.py) seen through the VectorStore protocol.

An adapter rather than a rewrite: the service keeps using VectorIndex (its file format, builds and
tombstones); this adds what the protocol asks that VectorIndex does not yet say in its own words.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        allowed_ids: np.ndarray | Sequence[int] | None = None,
    ) -> tuple[Float32Array, Int64Array]:
        # VectorIndex restricts the search itself to the allowed ids (a FAISS IDSelector), so k results
        # come back whenever k allowed images are stored.
        return super().search(queries, k, allowed_ids=allowed_ids, params=params)


@register_store("faiss")
def _faiss(*, dim: int, fingerprint: str, spec: IndexSpec | None = None, **_: Any) -> FaissStore:
    return FaissStore(dim, fingerprint, spec)

"""``faiss``: the embedded store, VectorIndex (index/store.py) registered under the VectorStore protocol.

VectorIndex already answers the protocol (add, remove, search with allowed_ids and params, count, ids,
reconstruct_batch), so the registration is all there is: each process holds its own copy of the index and
follows the database's change feed.
"""

from __future__ import annotations

from typing import Any

from index.base import register_store
from index.faiss.types import IndexSpec
from index.store import VectorIndex

__all__: list[str] = []


@register_store("faiss")
def _faiss(*, dim: int, fingerprint: str, spec: IndexSpec | None = None, **_: Any) -> VectorIndex:
    return VectorIndex(dim, fingerprint, spec)

"""Building each registered vector store for a test: FAISS in memory, Milvus as Milvus Lite in tmp_path."""

from __future__ import annotations

from pathlib import Path

from index import VectorStore, build_store
from tests.helpers.vectors import DIM, FINGERPRINT

# What each store needs beyond dim and fingerprint to run inside one test's folder.
OPTIONS = {
    "faiss": lambda tmp: {},
    "milvus": lambda tmp: {"uri": str(tmp / "milvus.db"), "collection": "test"},
}


def make_store(name: str, tmp: Path, dim: int = DIM, fingerprint: str = FINGERPRINT) -> VectorStore:
    if name not in OPTIONS:
        raise AssertionError(f"tests/index/stores.py has no options for the new store {name!r}: add them")
    return build_store(name, dim=dim, fingerprint=fingerprint, **OPTIONS[name](tmp))

"""Which FAISS index for which collection: the automatic choice of type, and the parameters of a type for a
collection size. The types themselves (what each is, builds and costs) are registered in index/faiss/types.py.

The automatic choice (``choose_type``) is made from the number of vectors and the memory budget:
exact while brute force meets the latency target, then HNSW while it fits the budget, then IVF-Flat, then
IVF-PQ. ``bench/ann.py`` measures the figures the constants below come from.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from index.faiss.types import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    INDEX_TYPES,
    MIN_TRAIN_VECTORS,
    OVERHEAD,
    IndexSpec,
    index_type,
    nlist_for,
    pq_m_for,
)

__all__ = [
    "AUTO",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_NPROBE",
    "FLAT_MAX_VECTORS",
    "INDEX_TYPES",
    "MIN_TRAIN_VECTORS",
    "IndexSpec",
    "build_faiss_index",
    "choose_type",
    "estimated_bytes",
    "nlist_for",
    "pq_m_for",
    "resolve",
    "spec_for",
    "train_sample_size",
]

AUTO: Final = "auto"

# Brute force over N vectors of 1280 floats reads 5 KB per vector per query: on this project's shared 2-core
# machine (one search thread) 10,000 vectors answer in 3.1 ms p50 / 4.6 ms p99 and 20,000 in 6.3 / 10.3 ms
# (bench/ann.py, "exact search latency by size"), so the 5 ms p99 target ends at about 10,000 vectors of the
# default dimension. Scaled by dimension so a 128-d autoencoder code stays exact ten times longer.
FLAT_MAX_VECTORS: Final = 10_000
_FLAT_REFERENCE_DIM: Final = 1280


def spec_for(index_type_name: str, n: int, dim: int) -> IndexSpec:
    """Parameters of the type for a collection of n vectors of ``dim``; Flat when n is too small to train
    it (a collection under ``MIN_TRAIN_VECTORS`` is exact anyway)."""
    if index_type_name not in INDEX_TYPES:
        raise ValueError(f"index type {index_type_name!r} is not one of {AUTO}, {', '.join(INDEX_TYPES)}")
    kind = index_type(index_type_name)
    if kind.needs_training and n < MIN_TRAIN_VECTORS:
        return IndexSpec("flat")
    return kind.spec_for(n, dim)


def flat_max_vectors(dim: int) -> int:
    return FLAT_MAX_VECTORS * _FLAT_REFERENCE_DIM // max(dim, 1)


def choose_type(n: int, dim: int, memory_mb: float) -> str:
    """The automatic choice: exact while brute force meets the latency target; then HNSW, whose recall for
    the time of a query was the best measured (bench/ann.py, crops of real photos: at 1M, recall@10 0.969 at
    0.5 ms p50 against IVF-Flat's 1.2 ms at nprobe 4; at 20,000, 0.996 at 0.5 ms against 0.92 at 0.4 ms),
    while it fits the memory budget; then IVF-Flat, whose vectors take a little less; else IVF-PQ."""
    budget = memory_mb * 2**20
    if n <= flat_max_vectors(dim) or n < MIN_TRAIN_VECTORS:
        return "flat"
    for kind in ("hnsw", "ivf_flat"):
        if estimated_bytes(spec_for(kind, n, dim), n, dim) <= budget:
            return kind
    return "ivf_pq"


def resolve(setting: str, n: int, dim: int, memory_mb: float) -> IndexSpec:
    """The spec for a configured type (``auto`` or one of INDEX_TYPES) and a collection of n vectors."""
    chosen = choose_type(n, dim, memory_mb) if setting == AUTO else setting
    return spec_for(chosen, n, dim)


def estimated_bytes(spec: IndexSpec, n: int, dim: int) -> int:
    """Resident size of the index holding n vectors (the vectors, codes, ids, graph links and centroids)."""
    centroids = spec.nlist * dim * 4
    return int(n * spec.kind.bytes_per_vector(spec, dim) * OVERHEAD + centroids)


def train_sample_size(spec: IndexSpec) -> int:
    """How many vectors to train on (0 for a type that needs no training)."""
    return spec.kind.train_sample_size(spec) if spec.needs_training else 0


def build_faiss_index(spec: IndexSpec, dim: int) -> Any:
    """A new, empty FAISS index for spec (untrained for IVF); see the type's ``build``."""
    return spec.kind.build(spec, dim)


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a uniform sample without replacement (all rows when size >= n)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)

"""Which FAISS index for which collection, its parameters, and how it is trained.

Four types, all inner product on L2-normalised vectors (cosine similarity):

- ``flat``: exact brute force. Cost per query grows with N·dim, so it is the choice while the collection is
  small (see ``FLAT_MAX_VECTORS``).
- ``ivf_flat``: k-means cells (``nlist`` ≈ 4·√N), a query scans its ``nprobe`` nearest cells; the vectors
  are kept whole, so memory is that of Flat and scores are exact within the scanned cells.
- ``ivf_pq``: the same cells, vectors compressed by product quantisation (``pq_m`` bytes each): a tenth of
  the memory or less, approximate scores. For collections whose vectors do not fit the memory budget.
- ``hnsw``: a navigable small-world graph; the best recall for the time of a query, but a build that is
  slower than an IVF's and no removal (VectorIndex hides removed ids, see ``index/store.py``, until the next
  `cbir index-build`).

The automatic choice (``choose_type``) is made from the number of vectors and the memory budget:
exact while brute force meets the latency target, then HNSW while it fits the budget, then IVF-Flat, then
IVF-PQ. ``bench/ann.py`` measures the figures the constants below come from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal, get_args

import faiss
import numpy as np

# The faiss stubs lack parts of the API used here (DirectMap, HNSW fields): reach them untyped.
_faiss: Any = faiss

__all__ = [
    "AUTO",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_NPROBE",
    "FLAT_MAX_VECTORS",
    "INDEX_TYPES",
    "MIN_TRAIN_VECTORS",
    "IndexSpec",
    "IndexType",
    "build_faiss_index",
    "choose_type",
    "estimated_bytes",
    "resolve",
    "spec_for",
    "train_sample_size",
]

IndexType = Literal["flat", "ivf_flat", "ivf_pq", "hnsw"]
INDEX_TYPES: Final[tuple[str, ...]] = get_args(IndexType)
AUTO: Final = "auto"

# Brute force over N vectors of 1280 floats reads 5 KB per vector per query: on this project's shared 2-core
# machine (one search thread) 10,000 vectors answer in 3.1 ms p50 / 4.6 ms p99 and 20,000 in 6.3 / 10.3 ms
# (bench/ann.py, "exact search latency by size"), so the 5 ms p99 target ends at about 10,000 vectors of the
# default dimension. Scaled by dimension so a 128-d autoencoder code stays exact ten times longer.
FLAT_MAX_VECTORS: Final = 10_000
_FLAT_REFERENCE_DIM: Final = 1280
# IVF needs enough vectors to train k-means (and PQ's 256 codewords per sub-quantizer); below, Flat.
MIN_TRAIN_VECTORS: Final = 256
# k-means wants >= 39 points per centroid (FAISS warns below); more costs training time (at 4,000 cells of
# 1280-d, each k-means iteration over 39 points a cell is 1.6 TFLOP: minutes on a small CPU) for little gain.
_MIN_POINTS_PER_LIST: Final = 39
_TRAIN_POINTS_PER_LIST: Final = 40
_KMEANS_ITERATIONS: Final = 10
# From this many lists the coarse quantizer is itself an HNSW graph over the centroids: scanning 4,000
# centroids of 1280 floats costs ~2 ms per query on one core, the graph a few hundredths of that.
_HNSW_QUANTIZER_FROM: Final = 1024
# Default search-time parameters, the smallest that gave recall@10 >= 0.95 in bench/ann.py (README): HNSW at
# 1M crops of real photos, efSearch 64: 0.942, 128: 0.969 (p50 0.5 ms); IVF-Flat needs nprobe 32 at 20,000
# crops (0.974, nlist 512), where each photo has one crop and the neighbours are other photos; at 1M (90
# crops a photo) nprobe 4 already finds 0.9997.
DEFAULT_NPROBE: Final = 32
DEFAULT_EF_SEARCH: Final = 128
_HNSW_M: Final = 32
_EF_CONSTRUCTION: Final = 40
_PQ_NBITS: Final = 8
# Memory beyond the vectors themselves: IVF ids and lists, the HNSW graph (M*2 links of 4 bytes per vector).
_OVERHEAD: Final = 1.1


@dataclass(frozen=True)
class IndexSpec:
    """An index type with the parameters it is built with and its default search-time parameters.

    Recorded in the index file's header, so a file says exactly what it holds and a configured type that
    differs from it is noticed at load.
    """

    type: str = "flat"
    nlist: int = 0
    pq_m: int = 0
    pq_nbits: int = 0
    hnsw_m: int = 0
    ef_construction: int = 0
    nprobe: int = 0
    ef_search: int = 0

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"index type {self.type!r} is not one of {', '.join(INDEX_TYPES)}")
        for name, value in asdict(self).items():
            if name != "type" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"index parameter {name} must be an integer >= 0, got {value!r}")
        if self.is_ivf and (self.nlist < 1 or self.nprobe < 1):
            raise ValueError(f"{self.type} needs nlist >= 1 and nprobe >= 1, got {self.nlist}, {self.nprobe}")
        if self.type == "ivf_pq" and (self.pq_m < 1 or not 1 <= self.pq_nbits <= 16):
            raise ValueError(
                f"ivf_pq needs pq_m >= 1 and 1 <= pq_nbits <= 16, got {self.pq_m}, {self.pq_nbits}"
            )
        if self.type == "hnsw" and (self.hnsw_m < 2 or self.ef_search < 1 or self.ef_construction < 1):
            raise ValueError("hnsw needs hnsw_m >= 2, ef_construction >= 1 and ef_search >= 1")

    @property
    def is_ivf(self) -> bool:
        return self.type in ("ivf_flat", "ivf_pq")

    @property
    def needs_training(self) -> bool:
        return self.is_ivf

    def description(self) -> str:
        """The faiss index_factory string (informational: ``build_faiss_index`` builds the index)."""
        if self.type == "flat":
            return "Flat"
        if self.type == "hnsw":
            return f"HNSW{self.hnsw_m}"
        quantizer = f"IVF{self.nlist}_HNSW32" if self.nlist >= _HNSW_QUANTIZER_FROM else f"IVF{self.nlist}"
        codes = "Flat" if self.type == "ivf_flat" else f"PQ{self.pq_m}x{self.pq_nbits}"
        return f"{quantizer},{codes}"

    def params(self) -> dict[str, int]:
        """The parameters that apply to this type (for the file header, `cbir stats` and messages)."""
        return {name: value for name, value in asdict(self).items() if name != "type" and value}

    def describe(self) -> str:
        shown = ", ".join(f"{name}={value}" for name, value in self.params().items())
        return f"{self.type} ({shown})" if shown else self.type

    @classmethod
    def from_header(cls, index_type: object, params: object) -> IndexSpec:
        """Raises ValueError for anything that is not a spec this version writes."""
        if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
            raise ValueError(f"index parameters must be an object, got {params!r}")
        unknown = set(params) - set(cls.__dataclass_fields__) - {"type"}
        if unknown:
            raise ValueError(f"unknown index parameters {sorted(unknown)}")
        return cls(type=str(index_type), **{key: value for key, value in params.items() if key != "type"})

    def with_search_defaults(self, nprobe: int | None, ef_search: int | None) -> IndexSpec:
        """This spec with other default search-time parameters (the settings'), where they apply."""
        return replace(
            self,
            nprobe=nprobe if nprobe and self.is_ivf else self.nprobe,
            ef_search=ef_search if ef_search and self.type == "hnsw" else self.ef_search,
        )


def nlist_for(n: int) -> int:
    """≈ 4·√N cells (the low end of the usual 4 to 16·√N: fewer, larger cells keep k-means and the per-query
    cell ranking cheap on a small CPU), but never so many that a cell gets fewer than 39 training points."""
    return max(1, min(round(4 * math.sqrt(max(n, 1))), n // _MIN_POINTS_PER_LIST))


def pq_m_for(dim: int) -> int:
    """Sub-quantizers: the largest divisor of dim that is at most dim / 8 (8-dim sub-vectors; 160 bytes per
    1280-d vector, 32 times smaller than float32)."""
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def spec_for(index_type: str, n: int, dim: int) -> IndexSpec:
    """Parameters of ``index_type`` for a collection of n vectors of ``dim``; Flat when n is too small to
    train an IVF (a collection under ``MIN_TRAIN_VECTORS`` is exact anyway)."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type {index_type!r} is not one of {AUTO}, {', '.join(INDEX_TYPES)}")
    if index_type == "hnsw":
        return IndexSpec(
            "hnsw", hnsw_m=_HNSW_M, ef_construction=_EF_CONSTRUCTION, ef_search=DEFAULT_EF_SEARCH
        )
    if index_type == "flat" or n < MIN_TRAIN_VECTORS:
        return IndexSpec("flat")
    nlist = nlist_for(n)
    nprobe = min(DEFAULT_NPROBE, nlist)
    if index_type == "ivf_flat":
        return IndexSpec("ivf_flat", nlist=nlist, nprobe=nprobe)
    return IndexSpec("ivf_pq", nlist=nlist, nprobe=nprobe, pq_m=pq_m_for(dim), pq_nbits=_PQ_NBITS)


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
    index_type = choose_type(n, dim, memory_mb) if setting == AUTO else setting
    return spec_for(index_type, n, dim)


def estimated_bytes(spec: IndexSpec, n: int, dim: int) -> int:
    """Resident size of the index holding n vectors (the vectors, codes, ids, graph links and centroids)."""
    if spec.type == "ivf_pq":
        per_vector = spec.pq_m * spec.pq_nbits / 8 + 8
    elif spec.type == "hnsw":
        per_vector = dim * 4 + 8 + spec.hnsw_m * 2 * 4 * _OVERHEAD
    else:
        per_vector = dim * 4 + 8
    centroids = spec.nlist * dim * 4
    return int(n * per_vector * _OVERHEAD + centroids)


def train_sample_size(spec: IndexSpec) -> int:
    """How many vectors to train on: 40 per k-means cell, and enough for PQ's codebooks (256 per code)."""
    if not spec.needs_training:
        return 0
    size = spec.nlist * _TRAIN_POINTS_PER_LIST
    if spec.type == "ivf_pq":
        size = max(size, 64 * (1 << spec.pq_nbits))
    return size


def build_faiss_index(spec: IndexSpec, dim: int) -> Any:
    """A new, empty FAISS index for spec (untrained for IVF).

    Flat and HNSW are wrapped in IndexIDMap2 (ids and reconstruction by id). An IVF stores ids itself and is
    given a hashtable direct map, which is what makes reconstruct and remove by arbitrary id possible.
    """
    if spec.type in ("flat", "hnsw"):
        inner: Any = faiss.index_factory(dim, spec.description(), faiss.METRIC_INNER_PRODUCT)
        if spec.type == "hnsw":
            inner.hnsw.efConstruction = spec.ef_construction
            inner.hnsw.efSearch = spec.ef_search
        return faiss.IndexIDMap2(inner)
    index: Any = faiss.index_factory(dim, spec.description(), faiss.METRIC_INNER_PRODUCT)
    ivf: Any = faiss.extract_index_ivf(index)
    ivf.cp.niter = _KMEANS_ITERATIONS
    ivf.nprobe = spec.nprobe
    ivf.set_direct_map_type(_faiss.DirectMap.Hashtable)
    if spec.type == "ivf_pq":
        # index_factory turns on polysemous training (codes reordered for Hamming filtering, unused here):
        # minutes of simulated annealing for nothing.
        index.do_polysemous_training = False
    return index


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a uniform sample without replacement (all rows when size >= n)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)

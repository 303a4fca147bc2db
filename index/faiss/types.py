"""The FAISS index types, one registered class each, and IndexSpec: a type with its parameters.

Everything that differs between types lives in the type's class: which parameters it takes and checks, the
parameters it gets for a collection size, its faiss index_factory string, how the empty index is built,
its search-time parameters, its memory per vector and its training sample. The rest of cbir asks the
registry (``INDEX_TYPES``, ``index_type``) instead of comparing type names, so a new type is one class
here plus its figures in bench/ann.py, and tests/index parametrise over ``INDEX_TYPES``.

All types are inner product on L2-normalised vectors (cosine similarity):

- ``flat``: exact brute force. Cost per query grows with N·dim, so it is the choice while the collection is
  small (index/factory.py, ``FLAT_MAX_VECTORS``).
- ``ivf_flat``: k-means cells (``nlist`` ≈ 4·√N), a query scans its ``nprobe`` nearest cells; the vectors
  are kept whole, so memory is that of Flat and scores are exact within the scanned cells.
- ``ivf_pq``: the same cells, vectors compressed by product quantisation (``pq_m`` bytes each): a tenth of
  the memory or less, approximate scores. For collections whose vectors do not fit the memory budget.
- ``hnsw``: a navigable small-world graph; the best recall for the time of a query, but a build that is
  slower than an IVF's and no removal (VectorIndex hides removed ids, see ``index/store.py``, until the next
  `cbir index-build`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Final, TypeVar

import faiss

from models.registry import Registry

# The faiss stubs lack parts of the API used here (DirectMap, HNSW fields, search parameters): reach them
# untyped.
_faiss: Any = faiss

__all__ = [
    "DEFAULT_EF_SEARCH",
    "DEFAULT_NPROBE",
    "INDEX_TYPES",
    "INDEX_TYPE_REGISTRY",
    "MIN_TRAIN_VECTORS",
    "OVERHEAD",
    "IndexSpec",
    "IndexType",
    "index_type",
    "nlist_for",
    "pq_m_for",
    "register_index_type",
]

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
# Memory beyond the vectors themselves: IVF ids and lists, the HNSW graph's levels (index/factory.py).
OVERHEAD: Final = 1.1


class IndexType:
    """What one index type is; subclasses register with ``@register_index_type(name)``."""

    name: ClassVar[str]
    # Searches scan every vector: an allowed-ids search needs no exact fall-back.
    exact: ClassVar[bool] = False
    # FAISS cannot remove from it: VectorIndex hides removed ids (tombstones) until a rebuild.
    tombstones: ClassVar[bool] = False
    # IVF: k-means cells, trained on a sample before vectors are added, ids stored in the lists.
    is_ivf: ClassVar[bool] = False
    # Trained on a sample of the collection before vectors are added (``train_sample_size`` says how many).
    needs_training: ClassVar[bool] = False
    # The search-time parameter that trades recall for time (a SearchParams field), if the type has one.
    search_knob: ClassVar[str | None] = None

    def check(self, spec: IndexSpec) -> None:
        """Raise ValueError naming what is wrong with the spec's parameters for this type."""

    def spec_for(self, n: int, dim: int) -> IndexSpec:
        """The parameters for a collection of n vectors of ``dim`` (n already large enough to train)."""
        return IndexSpec(self.name)

    def description(self, spec: IndexSpec) -> str:
        """The faiss index_factory string (informational: ``build`` builds the index)."""
        raise NotImplementedError

    def build(self, spec: IndexSpec, dim: int) -> Any:
        """A new, empty FAISS index for spec: an IndexIDMap2 around the index, which keeps ids and
        reconstructs by id (IVF types store ids themselves and override this)."""
        inner: Any = faiss.index_factory(dim, self.description(spec), faiss.METRIC_INNER_PRODUCT)
        self.tune(inner, spec)
        return faiss.IndexIDMap2(inner)

    def tune(self, inner: Any, spec: IndexSpec) -> None:
        """Set the spec's build parameters on the new index (before it is wrapped)."""

    def search_parameters(self, spec: IndexSpec, nprobe: int | None, ef_search: int | None) -> Any:
        """FAISS search parameters for one request (None: the type has none)."""
        return None

    def with_search_defaults(self, spec: IndexSpec, nprobe: int | None, ef_search: int | None) -> IndexSpec:
        """The spec with other default search-time parameters, where this type has them."""
        return spec

    def bytes_per_vector(self, spec: IndexSpec, dim: int) -> float:
        return dim * 4 + 8

    def train_sample_size(self, spec: IndexSpec) -> int:
        """How many vectors to train on (0: the type needs no training)."""
        return 0


_T = TypeVar("_T", bound=IndexType)

INDEX_TYPE_REGISTRY: Registry[IndexType] = Registry(
    "index type", unknown="index type {name!r} is not one of {known}", sort=False
)


def register_index_type(name: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: register one instance of the class under ``name`` (the order of registration is
    the order the types are listed in, from exact to most compressed)."""

    def decorate(cls: type[_T]) -> type[_T]:
        if name in INDEX_TYPE_REGISTRY:
            INDEX_TYPE_REGISTRY.add(name, INDEX_TYPE_REGISTRY.get(name))  # raises "already registered"
        cls.name = name
        INDEX_TYPE_REGISTRY.add(name, cls())
        return cls

    return decorate


def index_type(name: str) -> IndexType:
    """The registered type called ``name``; ValueError listing the known ones otherwise."""
    return INDEX_TYPE_REGISTRY.get(name)


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
        kind = index_type(self.type)
        for name, value in asdict(self).items():
            if name != "type" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"index parameter {name} must be an integer >= 0, got {value!r}")
        kind.check(self)

    @property
    def kind(self) -> IndexType:
        return index_type(self.type)

    @property
    def is_ivf(self) -> bool:
        return self.kind.is_ivf

    @property
    def needs_training(self) -> bool:
        return self.kind.needs_training

    def description(self) -> str:
        """The faiss index_factory string (informational: the type's ``build`` builds the index)."""
        return self.kind.description(self)

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
        return self.kind.with_search_defaults(self, nprobe, ef_search)


def nlist_for(n: int) -> int:
    """≈ 4·√N cells (the low end of the usual 4 to 16·√N: fewer, larger cells keep k-means and the per-query
    cell ranking cheap on a small CPU), but never so many that a cell gets fewer than 39 training points."""
    return max(1, min(round(4 * math.sqrt(max(n, 1))), n // _MIN_POINTS_PER_LIST))


def pq_m_for(dim: int) -> int:
    """Sub-quantizers: the largest divisor of dim that is at most dim / 8 (8-dim sub-vectors; 160 bytes per
    1280-d vector, 32 times smaller than float32)."""
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


@register_index_type("flat")
class Flat(IndexType):
    exact = True

    def description(self, spec: IndexSpec) -> str:
        return "Flat"


class _IVF(IndexType):
    """What IVF-Flat and IVF-PQ share: the cells, their training and nprobe."""

    is_ivf = True
    needs_training = True
    search_knob = "nprobe"

    def check(self, spec: IndexSpec) -> None:
        if spec.nlist < 1 or spec.nprobe < 1:
            raise ValueError(f"{spec.type} needs nlist >= 1 and nprobe >= 1, got {spec.nlist}, {spec.nprobe}")

    def spec_for(self, n: int, dim: int) -> IndexSpec:
        nlist = nlist_for(n)
        return IndexSpec(self.name, nlist=nlist, nprobe=min(DEFAULT_NPROBE, nlist), **self.code_params(dim))

    def code_params(self, dim: int) -> dict[str, int]:
        """The parameters of how the vectors are stored in the cells."""
        return {}

    def description(self, spec: IndexSpec) -> str:
        quantizer = f"IVF{spec.nlist}_HNSW32" if spec.nlist >= _HNSW_QUANTIZER_FROM else f"IVF{spec.nlist}"
        return f"{quantizer},{self.code_description(spec)}"

    def code_description(self, spec: IndexSpec) -> str:
        raise NotImplementedError

    def build(self, spec: IndexSpec, dim: int) -> Any:
        """Untrained. An IVF stores ids itself and is given a hashtable direct map, which is what makes
        reconstruct and remove by arbitrary id possible."""
        index: Any = faiss.index_factory(dim, spec.description(), faiss.METRIC_INNER_PRODUCT)
        ivf: Any = faiss.extract_index_ivf(index)
        ivf.cp.niter = _KMEANS_ITERATIONS
        ivf.nprobe = spec.nprobe
        ivf.set_direct_map_type(_faiss.DirectMap.Hashtable)
        return index

    def search_parameters(self, spec: IndexSpec, nprobe: int | None, ef_search: int | None) -> Any:
        return _faiss.SearchParametersIVF(nprobe=nprobe or spec.nprobe)

    def with_search_defaults(self, spec: IndexSpec, nprobe: int | None, ef_search: int | None) -> IndexSpec:
        return replace(spec, nprobe=nprobe) if nprobe else spec

    def train_sample_size(self, spec: IndexSpec) -> int:
        """40 vectors per k-means cell."""
        return spec.nlist * _TRAIN_POINTS_PER_LIST


@register_index_type("ivf_flat")
class IVFFlat(_IVF):
    def code_description(self, spec: IndexSpec) -> str:
        return "Flat"


@register_index_type("ivf_pq")
class IVFPQ(_IVF):
    def check(self, spec: IndexSpec) -> None:
        super().check(spec)
        if spec.pq_m < 1 or not 1 <= spec.pq_nbits <= 16:
            raise ValueError(
                f"ivf_pq needs pq_m >= 1 and 1 <= pq_nbits <= 16, got {spec.pq_m}, {spec.pq_nbits}"
            )

    def code_params(self, dim: int) -> dict[str, int]:
        return {"pq_m": pq_m_for(dim), "pq_nbits": _PQ_NBITS}

    def code_description(self, spec: IndexSpec) -> str:
        return f"PQ{spec.pq_m}x{spec.pq_nbits}"

    def build(self, spec: IndexSpec, dim: int) -> Any:
        index = super().build(spec, dim)
        # index_factory turns on polysemous training (codes reordered for Hamming filtering, unused here):
        # minutes of simulated annealing for nothing.
        index.do_polysemous_training = False
        return index

    def bytes_per_vector(self, spec: IndexSpec, dim: int) -> float:
        return spec.pq_m * spec.pq_nbits / 8 + 8

    def train_sample_size(self, spec: IndexSpec) -> int:
        """Enough for the cells and for PQ's codebooks (256 per code)."""
        return max(super().train_sample_size(spec), 64 * (1 << spec.pq_nbits))


@register_index_type("hnsw")
class HNSW(IndexType):
    tombstones = True
    search_knob = "ef_search"

    def check(self, spec: IndexSpec) -> None:
        if spec.hnsw_m < 2 or spec.ef_search < 1 or spec.ef_construction < 1:
            raise ValueError("hnsw needs hnsw_m >= 2, ef_construction >= 1 and ef_search >= 1")

    def spec_for(self, n: int, dim: int) -> IndexSpec:
        return IndexSpec(
            "hnsw", hnsw_m=_HNSW_M, ef_construction=_EF_CONSTRUCTION, ef_search=DEFAULT_EF_SEARCH
        )

    def description(self, spec: IndexSpec) -> str:
        return f"HNSW{spec.hnsw_m}"

    def tune(self, inner: Any, spec: IndexSpec) -> None:
        inner.hnsw.efConstruction = spec.ef_construction
        inner.hnsw.efSearch = spec.ef_search

    def search_parameters(self, spec: IndexSpec, nprobe: int | None, ef_search: int | None) -> Any:
        return _faiss.SearchParametersHNSW(efSearch=ef_search or spec.ef_search)

    def with_search_defaults(self, spec: IndexSpec, nprobe: int | None, ef_search: int | None) -> IndexSpec:
        return replace(spec, ef_search=ef_search) if ef_search else spec

    def bytes_per_vector(self, spec: IndexSpec, dim: int) -> float:
        """The vector and its id, and the graph's links (M*2 of 4 bytes; they are most of the overhead)."""
        return dim * 4 + 8 + spec.hnsw_m * 2 * 4 * OVERHEAD


# Last in the file: a snapshot of the registry that the settings' Literal and the tests' parametrisation read
# at import, so a new type's class goes above this line.
INDEX_TYPES: Final[tuple[str, ...]] = tuple(INDEX_TYPE_REGISTRY.names())

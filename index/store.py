"""VectorIndex: the id <-> vector store behind search, and its on-disk file.

File format (version 2; version 1 files, Flat only, are still read), one file so that the index and the
facts needed to trust it can never disagree::

    offset 0        8 bytes   magic b"CBIRVIDX"
    offset 8        4 bytes   header length H, unsigned little-endian
    offset 12       H bytes   header, UTF-8 JSON object:
                                format_version  int   (2)
                                dim             int   vector dimension
                                fingerprint     str   encoder fingerprint that produced the vectors
                                index_type      str   a name in index/faiss/types.py (absent: flat)
                                params          obj   the type's build and default search parameters
                                build_id        str   new for every index built from scratch; kept by saves
                                description     str   faiss index_factory string (informational)
                                ntotal          int   number of (live) vectors
                                stored          int   vectors FAISS holds, removed HNSW entries included
                                payload_nbytes  int   length of the payload
                                payload_crc32   int   zlib.crc32 of the payload
                                faiss_version   str   informational only
    offset 12 + H   payload   faiss.serialize_index() of the index, payload_nbytes long, then EOF

The payload is an IndexIDMap2 for flat and hnsw, the IVF index itself (ids stored in its lists, hashtable
direct map) for ivf_flat and ivf_pq.

The header is read and checked (version, dim, fingerprint) before the payload, so a mismatched index fails
in milliseconds whatever its size. The CRC is checked before FAISS sees the payload because FAISS's reader
trusts its input: corrupt bytes can make it allocate absurd amounts of memory or worse.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import struct
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import faiss
import numpy as np
import numpy.typing as npt

from index.errors import IndexFileError, IndexMismatchError, VectorIndexError
from index.factory import IndexSpec, build_faiss_index

__all__ = ["FORMAT_VERSION", "MAGIC", "SearchParams", "VectorIndex"]

FORMAT_VERSION: Final = 2
_READABLE_VERSIONS: Final = (1, 2)
_INT64_MAX: Final = 2**63 - 1
MAGIC: Final = b"CBIRVIDX"
_HEADER_LEN: Final = struct.Struct("<I")
_PREFIX_LEN: Final = len(MAGIC) + _HEADER_LEN.size
# A real header is a few hundred bytes; the cap stops a corrupt length from triggering a huge read.
_MAX_HEADER_BYTES: Final = 1 << 20
# Mode for a brand-new index file. mkstemp creates 0600, which would make the index unreadable to e.g. a
# backup job running as another user; an existing file's mode is kept instead.
_NEW_FILE_MODE: Final = 0o644

# The faiss stubs lack parts of the API used here (search parameters, DirectMap): reach them untyped.
_faiss: Any = faiss

Int64Array = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]


class SearchParams:
    """Search-time parameters of one request; None keeps the index's defaults (its spec's).

    nprobe applies to IVF indexes (cells scanned), ef_search to HNSW (candidate list length); each is
    ignored by the other types, so a client need not know which type the service runs.
    """

    __slots__ = ("ef_search", "nprobe")

    def __init__(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.nprobe = nprobe
        self.ef_search = ef_search

    def __repr__(self) -> str:
        return f"SearchParams(nprobe={self.nprobe!r}, ef_search={self.ef_search!r})"


class VectorIndex:
    """Inner-product FAISS index keyed by the database row ids, of a type in ``index/faiss/types.py``.

    Flat and HNSW sit in an IndexIDMap2 rather than an IndexIDMap because its reverse map (id -> position) is
    what makes ``reconstruct`` by id possible. IVF indexes store the ids in their lists and get a hashtable
    direct map for the same purpose (and for removal by arbitrary id).

    HNSW cannot remove a node from its graph, so ``remove`` turns the id's slot into a tombstone (id -1 in
    the IDMap2's map): searches pass a selector that skips it, ``ids``/``reconstruct``/``ntotal`` no longer
    see it, and the vector's memory is reclaimed when the index is rebuilt (`cbir index-build`).

    Thread-safety: every method that touches the FAISS index holds ``self._lock``. FAISS allows concurrent
    *searches* but not a search concurrent with ``add``/``remove`` (they reallocate the storage being
    scanned). A single lock rather than a readers-writer lock because the standard library has none, the
    FAISS calls release the GIL so waiting threads cost nothing, and one process serves a modest query rate;
    if profiling ever shows searches queueing behind each other, a readers-writer lock is the drop-in
    upgrade. It is reentrant so that methods may call each other while holding it.
    """

    dim: int
    fingerprint: str
    spec: IndexSpec
    build_id: str
    # OpenMP threads a search uses (None: FAISS's default, every core). The service sets 1: a request
    # searches one query, and on a small shared CPU a second thread mostly waits (bench/ann.py).
    search_threads: int | None = None

    def __init__(self, dim: int, fingerprint: str, spec: IndexSpec | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(fingerprint, str) or not fingerprint:
            # An empty fingerprint would make every encoder look compatible with every index.
            raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        spec = spec if spec is not None else IndexSpec()
        if not isinstance(spec, IndexSpec):
            raise ValueError(f"spec must be an IndexSpec (index/factory.py), got {spec!r}")
        self._setup(build_faiss_index(spec, int(dim)), int(dim), fingerprint, spec, uuid.uuid4().hex)

    def _setup(self, index: Any, dim: int, fingerprint: str, spec: IndexSpec, build_id: str) -> None:
        """Shared by ``__init__`` and ``load``, which gets its FAISS index from a file instead."""
        self.dim = dim
        self.fingerprint = fingerprint
        self.spec = spec
        self.build_id = build_id
        self._index = index
        stored = _stored_ids(index)
        # FAISS's reverse maps are not reachable from Python, and the duplicate check in add() and
        # __contains__ must not scan every id. Tombstones (-1, HNSW) are not ids.
        self._id_set: set[int] = set(stored[stored >= 0].tolist())
        self._tombstones = int((stored < 0).sum())
        ivf = faiss.try_extract_index_ivf(index)
        self._hnsw_quantizer = ivf is not None and isinstance(
            faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW
        )
        self._lock = threading.RLock()
        # Held for the whole of save(), so that concurrent saves reach os.replace in snapshot order and an
        # older snapshot can never overwrite a newer one; self._lock is only held while serialising.
        self._save_lock = threading.Lock()
        # Bumped by every add and remove: caches derived from the stored vectors (the re-ranking neighbour
        # lists) compare it to know they are stale without comparing the vectors.
        self._version = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self.dim}, fingerprint={self.fingerprint!r}, "
            f"spec={self.spec.describe()!r}, ntotal={self.ntotal})"
        )

    @property
    def description(self) -> str:
        """The faiss index_factory string of the index (``Flat``, ``IVF4000_HNSW32,Flat``, …)."""
        return self.spec.description()

    @property
    def index_type(self) -> str:
        return self.spec.type

    @property
    def is_trained(self) -> bool:
        with self._lock:
            return bool(self._index.is_trained)

    @property
    def version(self) -> int:
        """Changes whenever the stored vectors change (add, remove); equal versions mean equal contents."""
        with self._lock:
            return self._version

    @property
    def ntotal(self) -> int:
        """Vectors that searches can find (removed HNSW entries excluded)."""
        with self._lock:
            return len(self._id_set)

    def count(self) -> int:
        """The VectorStore protocol's name for ``ntotal``."""
        return self.ntotal

    @property
    def tombstones(self) -> int:
        """HNSW slots of removed ids, still in memory until the index is rebuilt; 0 for the other types."""
        with self._lock:
            return self._tombstones

    def __len__(self) -> int:
        return self.ntotal

    # ------------------------------------------------------------------ mutation

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF index (k-means cells, PQ codebooks) on a sample of the vectors it will hold.

        The sample should look like the collection (a uniform sample of it): cells trained on other data
        are unevenly filled and searches then scan too much or miss. A no-op for flat and hnsw.
        """
        if not self.spec.needs_training:
            return
        arr = _as_matrix(sample, self.dim, "sample", n=None)
        if len(arr) < self.spec.nlist:
            raise ValueError(
                f"training {self.spec.describe()} needs at least nlist={self.spec.nlist} vectors, "
                f"got {len(arr)}"
            )
        with self._lock:
            if self._index.ntotal:
                raise VectorIndexError("the index already holds vectors: train a new one instead")
            self._index.train(arr)
            self._version += 1

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under caller-chosen ids.

        Duplicates are refused rather than replaced: IndexIDMap2 would silently keep both copies, and a row id
        that appears twice in search results is a bug upstream that should surface here.
        """
        id_arr = _as_id_array(ids, "ids")
        vec_arr = _as_matrix(vectors, self.dim, "vectors", n=id_arr.shape[0])
        if id_arr.shape[0] == 0:
            return
        if (id_arr < 0).any():
            raise ValueError(
                "ids must be non-negative (FAISS uses -1 for 'no result'), "
                f"got {id_arr[id_arr < 0][:5].tolist()}"
            )
        unique, counts = np.unique(id_arr, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"ids contains duplicates within the batch: {unique[counts > 1][:10].tolist()}")
        with self._lock:
            present = [i for i in id_arr.tolist() if i in self._id_set]
            if present:
                raise ValueError(
                    f"ids already in the index: {present[:10]}{' ...' if len(present) > 10 else ''}; "
                    "remove them first to replace their vectors"
                )
            if not self._index.is_trained:
                raise VectorIndexError(
                    f"the {self.spec.describe()} index must be trained before vectors can be added"
                )
            self._index.add_with_ids(vec_arr, id_arr)
            self._id_set.update(id_arr.tolist())
            self._version += 1

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ids; unknown ids are ignored so that deleting twice is harmless (idempotent API calls)."""
        id_arr = _as_id_array(ids, "ids")
        with self._lock:
            known = sorted({i for i in id_arr.tolist() if i in self._id_set})
            if not known:
                return 0
            if self.spec.kind.tombstones:
                removed = self._tombstone(known)
            else:
                removed = int(self._index.remove_ids(np.asarray(known, dtype=np.int64)))
            self._id_set.difference_update(known)
            self._version += 1
            return removed

    def _tombstone(self, known: list[int]) -> int:
        """HNSW: hide the ids' slots (see the class docstring); the caller holds the lock."""
        id_map = faiss.vector_to_array(self._index.id_map)
        hit = np.isin(id_map, np.asarray(known, dtype=np.int64))
        id_map[hit] = -1
        faiss.copy_array_to_vector(id_map, self._index.id_map)
        self._index.construct_rev_map()
        self._tombstones += int(hit.sum())
        return len(known)

    # ------------------------------------------------------------------ queries

    def _faiss_params(self, params: SearchParams | None, selector: Any = None) -> Any:
        """FAISS search parameters for this type (None for flat without tombstones nor selector).

        ``selector``: a FAISS IDSelector the search keeps to (IndexIDMap2 translates it to its positions).
        """
        params = params or SearchParams()
        out = self.spec.kind.search_parameters(self.spec, params.nprobe, params.ef_search)
        if out is None:
            if selector is None and not self._tombstones:
                return None
            out = _faiss.SearchParameters()
        if self._hnsw_quantizer:
            # The cells come from a graph walk over the centroids: its candidate list must be well beyond
            # nprobe or cells are missed. (Adds keep FAISS's short default: one cell per vector.)
            out.quantizer_params = _faiss.SearchParametersHNSW(efSearch=max(64, 2 * out.nprobe))
        if self._tombstones and selector is None:
            # Only non-negative ids are members: the tombstones (-1) are skipped during the graph walk.
            out.sel = faiss.IDSelectorRange(0, _INT64_MAX)
        if selector is not None:
            out.sel = selector  # a batch of real ids never holds a tombstone's -1
        return out

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        *,
        allowed_ids: np.ndarray | Sequence[int] | None = None,
    ) -> tuple[Float32Array, Int64Array]:
        """Top-k by inner product (cosine similarity for the L2-normalised vectors the encoders produce).

        k is clipped to ntotal so that a small collection returns what it has instead of FAISS's padding of
        id -1; an empty index returns (Q, 0) arrays for the same reason. An approximate index may still pad
        a row with -1 (score -inf) when the cells or graph nodes it visits hold fewer than k vectors.

        ``allowed_ids``: search among these ids only (a metadata filter's matches), inside the search
        itself (a FAISS IDSelectorBatch), so k results come back whenever k allowed ids are stored, rather
        than "top k, then drop". Ids not stored are ignored. An approximate index walks only part of the
        collection and may find fewer than k allowed vectors there (an IVF's nprobe cells, an HNSW graph
        walk that meets few allowed nodes): then the allowed vectors are scored exactly instead, a chunk at
        a time, which is what a selective filter needs anyway (few vectors to score).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        q = _as_matrix(q, self.dim, "queries", n=None, original=queries)
        allowed = None if allowed_ids is None else np.unique(_as_id_array(allowed_ids, "allowed_ids"))
        with self._lock, _omp_threads(self.search_threads):
            ntotal = len(self._id_set)
            if ntotal == 0:
                return np.empty((q.shape[0], 0), np.float32), np.empty((q.shape[0], 0), np.int64)
            width = min(int(k), ntotal)
            if allowed is None:
                scores, found = self._index.search(q, width, params=self._faiss_params(params))
            else:
                allowed = np.asarray([i for i in allowed.tolist() if i in self._id_set], dtype=np.int64)
                scores, found = self._search_allowed(q, width, allowed, params)
        scores = np.asarray(scores, dtype=np.float32)
        found = np.asarray(found, dtype=np.int64)
        scores[found < 0] = -np.inf
        return scores, found

    def _search_allowed(
        self, q: Float32Array, width: int, allowed: Int64Array, params: SearchParams | None
    ) -> tuple[Float32Array, Int64Array]:
        """Search restricted to ``allowed`` (stored ids only); the caller holds the lock."""
        scores = np.full((len(q), width), -np.inf, np.float32)
        found = np.full((len(q), width), -1, np.int64)
        if not len(allowed):
            return scores, found
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        got_scores, got = self._index.search(q, width, params=self._faiss_params(params, selector))
        scores[:], found[:] = got_scores, got
        expected = min(width, len(allowed))
        if not self.spec.kind.exact and ((found >= 0).sum(axis=1) < expected).any():
            return self._exact_allowed(q, width, allowed)
        return scores, found

    def _exact_allowed(
        self, q: Float32Array, width: int, allowed: Int64Array
    ) -> tuple[Float32Array, Int64Array]:
        """Exact top-width among ``allowed``: reconstructed in chunks of 4096 (20 MB at 1280-d) and scored."""
        best_scores = np.full((len(q), 0), -np.inf, np.float32)
        best_ids = np.full((len(q), 0), -1, np.int64)
        for start in range(0, len(allowed), 4096):
            chunk = allowed[start : start + 4096]
            vectors = np.asarray(self._index.reconstruct_batch(chunk), np.float32).reshape(-1, self.dim)
            all_scores = np.hstack([best_scores, q @ vectors.T])
            all_ids = np.hstack([best_ids, np.broadcast_to(chunk, (len(q), len(chunk)))])
            order = np.argsort(-all_scores, axis=1, kind="stable")[:, :width]
            best_scores = np.take_along_axis(all_scores, order, axis=1)
            best_ids = np.take_along_axis(all_ids, order, axis=1)
        scores = np.full((len(q), width), -np.inf, np.float32)
        found = np.full((len(q), width), -1, np.int64)
        scores[:, : best_scores.shape[1]], found[:, : best_ids.shape[1]] = best_scores, best_ids
        return scores, found

    def range_search(
        self, queries: np.ndarray, threshold: float, params: SearchParams | None = None
    ) -> list[tuple[Float32Array, Int64Array]]:
        """Per query, every stored vector with inner product >= threshold, best first: (scores, ids).

        Exhaustive for flat; an IVF looks in its nprobe cells only and HNSW along its graph walk, so they
        can miss vectors (the near-duplicate report then finds fewer pairs, never false ones).
        """
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        q = _as_matrix(q, self.dim, "queries", n=None, original=queries)
        with self._lock, _omp_threads(self.search_threads):
            if not self._id_set:
                return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in range(len(q))]
            # FAISS keeps results strictly above its radius for inner product; nextafter makes it ">=".
            radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
            faiss_params = self._faiss_params(params)
            limits, scores, found = self._index.range_search(q, radius, params=faiss_params)
        out = []
        for row in range(len(q)):
            row_scores = np.asarray(scores[limits[row] : limits[row + 1]], dtype=np.float32)
            row_ids = np.asarray(found[limits[row] : limits[row + 1]], dtype=np.int64)
            keep = row_ids >= 0
            row_scores, row_ids = row_scores[keep], row_ids[keep]
            order = np.argsort(-row_scores, kind="stable")
            out.append((row_scores[order], row_ids[order]))
        return out

    def ids(self) -> Int64Array:
        with self._lock:
            stored = np.fromiter(self._id_set, dtype=np.int64, count=len(self._id_set))
        return np.sort(stored)

    def __contains__(self, image_id: object) -> bool:
        if isinstance(image_id, bool) or not isinstance(image_id, int | np.integer):
            return False
        with self._lock:
            return int(image_id) in self._id_set

    def reconstruct_batch(self, ids: np.ndarray | Sequence[int]) -> Float32Array:
        """(N, dim) stored vectors of ids, in order; KeyError naming the first unknown id.

        Exact for flat, ivf_flat and hnsw; ivf_pq returns its compressed approximation (within a few
        hundredths of cosine of the original), which is what its searches score with too.
        """
        id_arr = _as_id_array(ids, "ids")
        if id_arr.shape[0] == 0:
            return np.empty((0, self.dim), np.float32)
        with self._lock:
            for image_id in id_arr.tolist():
                if image_id not in self._id_set:
                    raise KeyError(image_id)
            return np.asarray(self._index.reconstruct_batch(id_arr), dtype=np.float32).reshape(-1, self.dim)

    def reconstruct(self, image_id: int) -> Float32Array:
        """The stored vector; KeyError (not FAISS's RuntimeError) for an unknown id, like a mapping."""
        with self._lock:
            if image_id not in self:
                raise KeyError(image_id)
            return np.asarray(self._index.reconstruct(int(image_id)), dtype=np.float32)

    def memory_bytes(self) -> int:
        """Bytes the index's arrays hold (vectors or codes, ids, graph links, centroids), without copying."""
        with self._lock:
            return _memory_bytes(self._index)

    # ------------------------------------------------------------------ persistence

    def header(self) -> dict[str, Any]:
        """What the file's header says of this index (without the payload fields)."""
        with self._lock:
            return {
                "format_version": FORMAT_VERSION,
                "dim": self.dim,
                "fingerprint": self.fingerprint,
                "index_type": self.spec.type,
                "params": self.spec.params(),
                "build_id": self.build_id,
                "description": self.spec.description(),
                "ntotal": len(self._id_set),
                "stored": int(self._index.ntotal),
                "faiss_version": faiss.__version__,
            }

    def save(self, path: Path) -> None:
        """Write atomically: a crash at any moment leaves the previous file or the new one, never a mix.

        The index is serialised to memory under the lock (a memcpy-speed snapshot consistent with concurrent
        adds), and written to disk outside it so searches are not blocked by I/O. The price is a transient
        second copy of the index in memory.
        """
        path = Path(path)
        with self._save_lock:
            with self._lock:
                payload = faiss.serialize_index(self._index)
                header = self.header()
            header["payload_nbytes"] = int(payload.nbytes)
            header["payload_crc32"] = zlib.crc32(payload.data)
            header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
            _atomic_write(path, [MAGIC, _HEADER_LEN.pack(len(header_bytes)), header_bytes, payload.data])

    @staticmethod
    def read_header(path: Path) -> dict[str, Any]:
        """The checked header of an index file, without reading the payload (milliseconds at any size)."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                return _read_header(f, path)
        except FileNotFoundError as exc:
            raise IndexFileError(path, "the file does not exist") from exc
        except OSError as exc:
            raise IndexFileError(path, f"the file cannot be read ({exc.strerror or exc})") from exc

    @classmethod
    def load(cls, path: Path, *, dim: int, fingerprint: str) -> VectorIndex:
        """Load and verify; never returns an index that disagrees with the configured encoder."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                header = _read_header(f, path)
                if header["dim"] != dim or header["fingerprint"] != fingerprint:
                    raise IndexMismatchError(
                        path,
                        stored_fingerprint=header["fingerprint"],
                        stored_dim=header["dim"],
                        expected_fingerprint=fingerprint,
                        expected_dim=dim,
                    )
                payload = _read_payload(f, path, header)
        except FileNotFoundError as exc:
            raise IndexFileError(path, "the file does not exist") from exc
        except OSError as exc:
            raise IndexFileError(path, f"the file cannot be read ({exc.strerror or exc})") from exc
        index = _deserialize(payload, path, header)
        self = cls.__new__(cls)
        self._setup(index, header["dim"], header["fingerprint"], header["spec"], header["build_id"])
        if int(index.ntotal) - self._tombstones != len(self._id_set):
            raise IndexFileError(path, "the file is corrupt (the stored index holds duplicate ids)")
        if len(self._id_set) != header["ntotal"]:
            raise IndexFileError(
                path,
                f"the file is corrupt (header says {header['ntotal']} vectors, the index holds "
                f"{len(self._id_set)})",
            )
        return self

    @classmethod
    def open_or_create(
        cls, path: Path, *, dim: int, fingerprint: str, spec: IndexSpec | None = None
    ) -> VectorIndex:
        """The service's startup path: ``spec`` only applies when no file exists yet."""
        path = Path(path)
        if not path.exists():
            return cls(dim, fingerprint, spec)
        return cls.load(path, dim=dim, fingerprint=fingerprint)


@contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """OpenMP threads for the calling thread only (OpenMP keeps the setting per thread), then restored."""
    if n is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _memory_bytes(index: Any) -> int:
    if isinstance(index, faiss.IndexIDMap2):
        ids = int(index.id_map.size()) * 8 * 3  # the map, and the reverse hash map (~2 words a slot)
        return ids + _memory_bytes(faiss.downcast_index(index.index))
    if isinstance(index, faiss.IndexHNSW):
        hnsw: Any = index.hnsw
        links = int(hnsw.neighbors.size()) * 4 + int(hnsw.levels.size()) * 4
        return links + _memory_bytes(faiss.downcast_index(index.storage))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        invlists: Any = ivf.invlists
        stored = sum(invlists.list_size(cell) for cell in range(invlists.nlist))
        direct_map = stored * 8 * 2  # hashtable id -> (list, offset)
        quantizer = _memory_bytes(faiss.downcast_index(ivf.quantizer))
        return int(stored * (ivf.code_size + 8) + direct_map + quantizer)
    return int(index.ntotal) * int(getattr(index, "code_size", index.d * 4))


def _stored_ids(index: Any) -> Int64Array:
    """Every id slot of a FAISS index: the IDMap2's map (with -1 tombstones), or an IVF's inverted lists."""
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    invlists: Any = faiss.extract_index_ivf(index).invlists
    chunks = [
        faiss.rev_swig_ptr(invlists.get_ids(cell), invlists.list_size(cell)).copy()
        for cell in range(invlists.nlist)
        if invlists.list_size(cell)
    ]
    return np.concatenate(chunks).astype(np.int64) if chunks else np.empty(0, np.int64)


# ---------------------------------------------------------------------- input validation


def _as_id_array(ids: object, what: str) -> Int64Array:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D int64 array of shape (N,), got shape {arr.shape} dtype {arr.dtype}"
        )
    if arr.shape[0] == 0:
        # np.asarray([]) is float64; an empty batch is accepted whatever its dtype.
        return np.empty(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array (int64), got shape {arr.shape} dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{what} must fit in int64, got values up to {int(arr.max())} (dtype {arr.dtype})")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _as_matrix(x: object, dim: int, what: str, *, n: int | None, original: object = None) -> Float32Array:
    """Check shape first, then dtype, then convert: a wrong-shape float64 array gets a shape message."""
    arr = np.asarray(x)
    shown = np.asarray(original) if original is not None else arr
    rows = "N" if n is None else str(n)
    if arr.ndim != 2 or arr.shape[1] != dim or (n is not None and arr.shape[0] != n):
        extra = " or (dim,)" if what == "queries" else ""
        raise ValueError(
            f"{what} must have shape ({rows}, {dim}){extra} and dtype float32, "
            f"got shape {shown.shape} dtype {shown.dtype}"
        )
    if arr.shape[0] == 0:
        return np.empty((0, dim), np.float32)
    if arr.dtype.kind != "f":
        raise ValueError(
            f"{what} must be floating point (float32), got shape {shown.shape} dtype {shown.dtype}"
        )
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, reported just below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{what} contains NaN or infinite values (after conversion to float32) "
            f"in rows {bad[:10].tolist()}"
        )
    return out


# ---------------------------------------------------------------------- file I/O


def _atomic_write(path: Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Temp file in the same directory so that os.replace is a rename, which POSIX makes atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave a multi-GB temp file behind either.
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; without this a power cut can resurrect the old directory entry."""
    if os.name == "nt":  # directories cannot be opened on Windows; NTFS journals renames itself
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (certain network and FUSE mounts) refuse fsync on a directory. The new file is in
        # place already, so failing the save would only mislead the caller.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _read_header(f: io.BufferedReader, path: Path) -> dict[str, Any]:
    prefix = f.read(_PREFIX_LEN)
    if prefix[: len(MAGIC)] != MAGIC:
        if len(prefix) < len(MAGIC) and MAGIC.startswith(prefix):
            raise IndexFileError(path, f"the file is truncated ({len(prefix)} bytes)")
        raise IndexFileError(path, "the file is not a cbir vector index (wrong magic bytes)")
    if len(prefix) < _PREFIX_LEN:
        raise IndexFileError(path, f"the file is truncated ({len(prefix)} bytes)")
    (header_len,) = _HEADER_LEN.unpack(prefix[len(MAGIC) :])
    if header_len > _MAX_HEADER_BYTES:
        raise IndexFileError(path, f"the file is corrupt (header length {header_len} is implausible)")
    raw = f.read(header_len)
    if len(raw) < header_len:
        raise IndexFileError(path, "the file is truncated (inside the header)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFileError(path, f"the file is corrupt (unreadable header: {exc})") from exc
    if not isinstance(header, dict):
        raise IndexFileError(path, "the file is corrupt (header is not a JSON object)")
    version = header.get("format_version")
    if version not in _READABLE_VERSIONS or isinstance(version, bool):
        raise IndexFileError(
            path,
            f"the file has format version {version!r} but this version of cbir reads "
            f"{' and '.join(map(str, _READABLE_VERSIONS))}",
        )
    for name, kind in (
        ("dim", int),
        ("fingerprint", str),
        ("description", str),
        ("ntotal", int),
        ("payload_nbytes", int),
        ("payload_crc32", int),
    ):
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise IndexFileError(path, f"the file is corrupt (header field {name!r} is {value!r})")
    stored = header.setdefault("stored", header["ntotal"])
    if not isinstance(stored, int) or isinstance(stored, bool) or stored < header["ntotal"]:
        raise IndexFileError(path, f"the file is corrupt (header field 'stored' is {stored!r})")
    # Version 1 files (and headers without a type) hold a Flat index in an IndexIDMap2.
    index_type = header.get("index_type", "flat")
    if version == 1 and header["description"] != "Flat":
        raise IndexFileError(path, f"the file holds a {header['description']!r} index of format version 1")
    try:
        header["spec"] = IndexSpec.from_header(index_type, header.get("params", {}))
    except (TypeError, ValueError) as exc:
        raise IndexFileError(path, f"the file is corrupt (index type or parameters: {exc})") from exc
    build_id = header.setdefault("build_id", f"v1-{header['payload_crc32']:08x}")
    if not isinstance(build_id, str) or not build_id:
        raise IndexFileError(path, f"the file is corrupt (header field 'build_id' is {build_id!r})")
    return header


def _read_payload(f: io.BufferedReader, path: Path, header: dict[str, Any]) -> npt.NDArray[np.uint8]:
    nbytes: int = header["payload_nbytes"]
    # Compare with the file size before allocating, so a truncated file gives a clear message and a corrupt
    # length does not become a MemoryError.
    expected_size = f.tell() + nbytes
    actual_size = os.fstat(f.fileno()).st_size
    if actual_size < expected_size:
        raise IndexFileError(path, f"the file is truncated ({actual_size} of {expected_size} bytes)")
    if actual_size > expected_size:
        raise IndexFileError(
            path, f"the file is corrupt ({actual_size - expected_size} unexpected bytes after the index)"
        )
    payload = np.empty(nbytes, dtype=np.uint8)
    view = payload.data
    got = 0
    while got < nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise IndexFileError(path, f"the file is truncated ({got} of {nbytes} index bytes read)")
        got += n
    if zlib.crc32(payload.data) != header["payload_crc32"]:
        raise IndexFileError(path, "the file is corrupt (checksum mismatch)")
    return payload


def _deserialize(payload: npt.NDArray[np.uint8], path: Path, header: dict[str, Any]) -> Any:
    try:
        # No faiss.downcast_index here: the SWIG reader already returns the concrete class, and downcasting a
        # temporary yields a non-owning proxy whose object is freed with the temporary (a use-after-free).
        index = faiss.deserialize_index(payload)
    except RuntimeError as exc:
        raise IndexFileError(path, f"the file is corrupt (FAISS cannot read it: {_first_line(exc)})") from exc
    spec: IndexSpec = header["spec"]
    expected = "an IVF index" if spec.is_ivf else "an IndexIDMap2"
    if spec.is_ivf:
        ivf = faiss.try_extract_index_ivf(index)
        usable = ivf is not None and ivf.direct_map.type == _faiss.DirectMap.Hashtable
    else:
        usable = isinstance(index, faiss.IndexIDMap2)
    if not usable:
        raise IndexFileError(
            path, f"the file is corrupt (holds a {type(index).__name__}, not {expected} as its header says)"
        )
    if index.d != header["dim"] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexFileError(path, "the file is corrupt (the stored index disagrees with its header)")
    if index.ntotal != header["stored"]:
        raise IndexFileError(
            path,
            f"the file is corrupt (header says {header['stored']} vectors, the index holds {index.ntotal})",
        )
    return index


_FAISS_LOCATION: Final = re.compile(r"^Error in .*? at \S+:\d+: ", re.DOTALL)


def _first_line(exc: BaseException) -> str:
    """FAISS errors start with a C++ signature and source location that mean nothing to an operator."""
    text = _FAISS_LOCATION.sub("", str(exc).strip(), count=1)
    return text.splitlines()[0] if text else type(exc).__name__

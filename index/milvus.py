"""``milvus``: the VectorStore protocol over pymilvus, for a Milvus server or Milvus Lite shared by replicas.

``uri`` is what ``CBIR_MILVUS_URI`` says: a file path (Milvus Lite embedded in this one process), or
``http://host:port`` (a Milvus standalone or cluster, or ``milvus-lite server --data-dir D --port P``, which
speaks the same gRPC protocol and which several processes can share). One collection per cbir collection:
an INT64 primary key (the image id) and a FLOAT_VECTOR, inner product, HNSW (M=16, efConstruction=200).
The encoder's fingerprint is a collection property, so a store of another encoder is refused.

Flushed deliberately: every add ends with a flush, so new vectors sit in a sealed, HNSW-indexed segment
rather than the growing one, which Milvus Lite searches by brute force (the issue measured 20,000 1280-d
vectors at about 9 ms a query once flushed and indexed, about 1.8 s while still growing). Every call uses
Strong consistency: a search sees every write acknowledged before it, on any replica.

Any failure to reach Milvus is a ``StoreUnavailableError`` naming the URI and ``CBIR_MILVUS_URI``; the gRPC
channel reconnects by itself, so the first call after Milvus is back succeeds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np

from index.base import Float32Array, Int64Array, register_store
from index.errors import VectorIndexError

__all__ = ["MilvusStore", "StoreUnavailableError"]

_T = TypeVar("_T")
_HNSW = {"M": 16, "efConstruction": 200}
_FINGERPRINT = "cbir.fingerprint"  # the collection property naming the encoder of its vectors
_BATCH = 2048  # rows per insert / get call: far below Milvus's 64 MiB gRPC message limit at 1280-d


class StoreUnavailableError(VectorIndexError):
    """The vector store cannot be reached: the service answers 503 and refuses writes until it is back."""


class MilvusStore:
    def __init__(
        self,
        dim: int,
        fingerprint: str,
        *,
        uri: str,
        collection: str = "cbir",
        token: str = "",
        timeout_s: float = 10.0,
        ef_search: int | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not fingerprint:
            raise ValueError("fingerprint must be a non-empty string")
        self.dim, self.fingerprint, self.uri, self.collection = int(dim), fingerprint, uri, collection
        self.ef_search = ef_search or 64
        self._timeout = timeout_s
        self._version = 0
        self._lock = threading.Lock()  # version bumps; pymilvus's client is thread-safe itself
        self._client = self._call(lambda: _client(uri, token, timeout_s))
        self._call(self._ensure_collection)

    # -- plumbing ---------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], _T]) -> _T:
        from pymilvus.exceptions import MilvusException

        try:
            try:
                return fn()
            except MilvusException as exc:
                # A restarted Milvus has the collection released: load it again, once, and retry.
                if "load" not in str(exc) or not hasattr(self, "_client"):
                    raise
                self._client.load_collection(self.collection, timeout=self._timeout)
                return fn()
        except (MilvusException, ConnectionError, TimeoutError, OSError) as exc:
            raise StoreUnavailableError(
                f"Milvus at {self.uri} (CBIR_MILVUS_URI) cannot be reached or refused the request: "
                f"{_first_line(exc)}; check that it is running and that CBIR_MILVUS_URI points at it"
            ) from exc
        except Exception as exc:  # grpc's RpcError and friends, which pymilvus does not always wrap
            if type(exc).__module__.startswith(("grpc", "pymilvus")):
                raise StoreUnavailableError(
                    f"Milvus at {self.uri} (CBIR_MILVUS_URI) cannot be reached: {_first_line(exc)}"
                ) from exc
            raise

    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        client = self._client
        if client.has_collection(self.collection):
            info = client.describe_collection(self.collection)
            stored_dim = next(
                int(f.get("params", {}).get("dim", 0)) for f in info["fields"] if f["name"] == "vector"
            )
            # A collection property, not the description (which Milvus Lite does not keep); one made
            # without it (by hand) is taken as this encoder's.
            described = (info.get("properties") or {}).get(_FINGERPRINT, self.fingerprint)
            if described != self.fingerprint or stored_dim != self.dim:
                raise VectorIndexError(
                    f"Milvus collection {self.collection!r} at {self.uri} holds vectors of encoder "
                    f"{described!r} (dim {stored_dim}), not {self.fingerprint!r} "
                    f"(dim {self.dim}): "
                    "run `cbir index-build` to rebuild it from the database, or set CBIR_MILVUS_COLLECTION "
                    "to another name"
                )
        else:
            schema = MilvusClient.create_schema(
                auto_id=False, enable_dynamic_field=False, description=self.fingerprint
            )
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            params = client.prepare_index_params()
            params.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params=_HNSW)
            client.create_collection(
                self.collection,
                schema=schema,
                index_params=params,
                consistency_level="Strong",
                properties={_FINGERPRINT: self.fingerprint},
            )
        client.load_collection(self.collection)

    def _present(self, ids: Sequence[int]) -> list[int]:
        found: list[int] = []
        for start in range(0, len(ids), _BATCH):
            chunk = [int(i) for i in ids[start : start + _BATCH]]
            rows = self._call(
                partial(
                    self._client.get, self.collection, ids=chunk, output_fields=["id"], timeout=self._timeout
                )
            )
            found.extend(int(row["id"]) for row in rows)
        return found

    def _bump(self) -> None:
        with self._lock:
            self._version += 1

    # -- the protocol -----------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @property
    def ntotal(self) -> int:
        return self.count()

    tombstones = 0  # Milvus compacts deleted rows away by itself

    def describe(self) -> str:
        return f"Milvus HNSW (M={_HNSW['M']}, efConstruction={_HNSW['efConstruction']}) at {self.uri}"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        vec = np.ascontiguousarray(vectors, dtype=np.float32)
        if vec.ndim != 2 or vec.shape != (len(id_arr), self.dim):
            raise ValueError(f"vectors must be ({len(id_arr)}, {self.dim}) float32, got {vec.shape}")
        if len(id_arr) == 0:
            return
        if (id_arr < 0).any():
            raise ValueError(f"ids must be non-negative, got {id_arr[id_arr < 0][:5].tolist()}")
        if len(np.unique(id_arr)) != len(id_arr):
            raise ValueError("ids contains duplicates within the batch")
        present = self._present(id_arr.tolist())
        if present:
            raise ValueError(f"ids already in the store: {present[:10]}; remove them first to replace them")
        for start in range(0, len(id_arr), _BATCH):
            rows = [
                {"id": int(i), "vector": v.tolist()}
                for i, v in zip(id_arr[start : start + _BATCH], vec[start : start + _BATCH], strict=True)
            ]
            self._call(partial(self._client.insert, self.collection, rows, timeout=self._timeout))
        self.flush()
        self._bump()

    def flush(self) -> None:
        """Seal the growing segment and wait (up to the timeout) until its HNSW index is built: until then
        Milvus searches the segment by brute force (bench/ann.py at 20,000 1280-d vectors: p50 194 ms right
        after the flush, 12 ms once indexed)."""
        self._call(lambda: self._client.flush(self.collection, timeout=self._timeout))
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            info = self._call(lambda: self._client.describe_index(self.collection, "vector"))
            if not int(info.get("pending_index_rows", 0) or 0):
                return
            time.sleep(0.05)

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        wanted = sorted({int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()})
        present = self._present(wanted)
        if present:
            self._call(lambda: self._client.delete(self.collection, ids=present, timeout=self._timeout))
            self._bump()
        return len(present)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: Any = None,
        *,
        allowed_ids: np.ndarray | None = None,
    ) -> tuple[Float32Array, Int64Array]:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        q = np.asarray(queries, dtype=np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}) float32, got {np.asarray(queries).shape}")
        ef = max(int(getattr(params, "ef_search", None) or self.ef_search), int(k))
        options: dict[str, Any] = {}
        if allowed_ids is not None:
            allowed = sorted({int(i) for i in np.asarray(allowed_ids, dtype=np.int64).reshape(-1).tolist()})
            if not allowed:
                return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
            # A literal list: Milvus Lite does not take filter templates (filter_params).
            options = {"filter": f"id in [{','.join(map(str, allowed))}]"}
        found = self._call(
            lambda: self._client.search(
                self.collection,
                data=q.tolist(),
                limit=int(k),
                output_fields=["id"],
                search_params={"metric_type": "IP", "params": {"ef": ef}},
                timeout=self._timeout,
                **options,
            )
        )
        width = max((len(hits) for hits in found), default=0)
        scores = np.full((len(q), width), -np.inf, np.float32)
        ids = np.full((len(q), width), -1, np.int64)
        for row, hits in enumerate(found):
            for col, hit in enumerate(hits):
                scores[row, col], ids[row, col] = float(hit["distance"]), int(hit["id"])
        return scores, ids

    def count(self) -> int:
        rows = self._call(
            lambda: self._client.query(
                self.collection, filter="", output_fields=["count(*)"], timeout=self._timeout
            )
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def ids(self) -> Int64Array:
        def every() -> list[int]:
            iterator = self._client.query_iterator(
                self.collection,
                batch_size=16384,
                filter="id >= 0",
                output_fields=["id"],
                timeout=self._timeout,
            )
            out: list[int] = []
            try:
                while batch := iterator.next():
                    out.extend(int(row["id"]) for row in batch)
            finally:
                iterator.close()
            return out

        return np.sort(np.array(self._call(every), dtype=np.int64))

    def __contains__(self, image_id: object) -> bool:
        if isinstance(image_id, bool) or not isinstance(image_id, int | np.integer):
            return False
        return bool(self._present([int(image_id)]))

    def reconstruct_batch(self, ids: np.ndarray | Sequence[int]) -> Float32Array:
        wanted = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()]
        if not wanted:
            return np.empty((0, self.dim), np.float32)
        got: dict[int, list[float]] = {}
        unique = sorted(set(wanted))
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            rows = self._call(
                partial(
                    self._client.get,
                    self.collection,
                    ids=chunk,
                    output_fields=["vector"],
                    timeout=self._timeout,
                )
            )
            got.update({int(row["id"]): row["vector"] for row in rows})
        for image_id in wanted:
            if image_id not in got:
                raise KeyError(image_id)
        return np.array([got[i] for i in wanted], dtype=np.float32).reshape(len(wanted), self.dim)

    def clear(self) -> None:
        """Remove every vector, keeping the collection and its index (a rebuild fills it again). Preferred
        to drop-and-create: Milvus Lite 3.2 fails the next flush of a collection re-created in the process
        that dropped it."""
        self._call(lambda: self._client.delete(self.collection, filter="id >= 0", timeout=self._timeout))
        self.flush()
        self._bump()

    def drop(self) -> None:
        """Drop the collection (a rebuild from the database recreates it)."""
        self._call(lambda: self._client.drop_collection(self.collection, timeout=self._timeout))

    def close(self) -> None:
        """Close the client. pymilvus shares one connection between the clients of a URI in a process, so
        this ends every other store's too: only for a process that is done with Milvus."""
        # Closing a client whose server is gone must not fail a shutdown.
        with contextlib.suppress(Exception):
            self._client.close()


def _client(uri: str, token: str, timeout_s: float) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=timeout_s)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


@register_store("milvus")
def _milvus(
    *, dim: int, fingerprint: str, uri: str = "milvus.db", collection: str = "cbir", **options: Any
) -> MilvusStore:
    return MilvusStore(dim, fingerprint, uri=uri, collection=collection, **options)

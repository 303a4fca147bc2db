"""Ranking with query-time re-ranking: alpha query expansion (alpha-QE) and database-side augmentation (DBA).

Radenović, Tolias and Chum (TPAMI 2018): a descriptor averaged with its nearest neighbours, each weighted by
its similarity to the power alpha, describes better what the neighbourhood shows. Query expansion does it to
the query (``q' = q + Σ_top-n s^alpha·d``), DBA to every database vector. Neither uses labels, and neither
changes the stored vectors: DBA is computed here, at query time, for the shortlist only, from neighbour lists
cached until the index changes. So both can be switched per request and the index stays what the encoder made.

This is the one ranking function of the product: `POST /search`, `cbir search` and `cbir evaluate` all call
``rank``, so what evaluation measures is what the service answers. For any k up to ``shortlist`` (every
request: k <= 100 <= shortlist) its answer is a prefix of one ranking: the first ``shortlist`` candidates
re-ordered by one score. A larger k (an evaluation ranking the whole collection) re-orders all k candidates
the same way. Scores are the cosines the results are sorted by, never clipped: they do not increase down a
row because the row is sorted by them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from app.config import Settings
from index import SearchParams, VectorIndex

__all__ = ["NeighbourCache", "RerankOptions", "options_from_settings", "rank"]

# Queries re-ranked together: bounds the (queries, shortlist, dim) working set to ~64 MB at 1280-d.
_CHUNK = 64
# Cosine from which a stored image counts as the query itself (float rounding of identical descriptors).
_EXACT_COPY = 0.9999


@dataclass(frozen=True)
class RerankOptions:
    """How many neighbours query expansion and DBA average (0 turns each off), alpha, how deep to re-order.

    Defaults measured on Corel-1K (`cbir evaluate`, leave-one-out): see the README's "Choosing a descriptor".
    """

    query_expansion: int = 10
    database_augmentation: int = 10
    alpha: float = 3.0
    shortlist: int = 200

    def __post_init__(self) -> None:
        if self.query_expansion < 0 or self.database_augmentation < 0:
            raise ValueError(
                "query_expansion and database_augmentation are neighbour counts: 0 (off) or more, got "
                f"{self.query_expansion} and {self.database_augmentation}"
            )
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0 (0 weighs all neighbours equally), got {self.alpha}")
        if self.shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {self.shortlist}")

    @property
    def active(self) -> bool:
        return self.query_expansion > 0 or self.database_augmentation > 0

    @classmethod
    def off(cls) -> RerankOptions:
        return cls(query_expansion=0, database_augmentation=0)

    def overridden(self, query_expansion: int | None, database_augmentation: int | None) -> RerankOptions:
        """These options with what a request or a flag switched (None keeps the value)."""
        return replace(
            self,
            query_expansion=self.query_expansion if query_expansion is None else query_expansion,
            database_augmentation=(
                self.database_augmentation if database_augmentation is None else database_augmentation
            ),
        )


class NeighbourCache:
    """Neighbour lists and database-side augmented vectors by id, valid for one version of one index.

    The augmented vector of an item depends on the database only, so it is computed once per index version
    (one batched search for the items not seen yet) and shared by every query. Any add or remove bumps the
    index's version and empties the cache: exact, at the price of recomputing the shortlist's neighbours on
    the first query after a change (one search of `shortlist` vectors against the index).
    """

    def __init__(self, max_items: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, int, int, float] | None = None
        # id -> (neighbour ids, weights s^alpha), `count` + 1 long: the spare stands in for an excluded id.
        self._neighbours: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._sums: dict[int, np.ndarray] = {}  # id -> Σ weight·vector over the first `count` neighbours
        self._max_items = max_items

    def augmented(
        self,
        index: VectorIndex,
        ids: np.ndarray,
        count: int,
        alpha: float,
        exclude: int | None = None,
    ) -> np.ndarray:
        """(len(ids), dim) alpha-DBA vectors: each item averaged with its `count` - 1 nearest others.

        `exclude` is left out of every average, replaced by the next neighbour. That is what makes a
        leave-one-out evaluation honest: the query is not in the database it is measured against, so no
        augmented vector may contain it.
        """
        depth = count + 1
        key = (id(index), index.version, depth, alpha)
        with self._lock:
            if key != self._key or len(self._sums) + len(ids) > self._max_items:
                self._key = key
                self._neighbours.clear()
                self._sums.clear()
            missing = np.array([i for i in ids.tolist() if i not in self._sums], dtype=np.int64)
            if len(missing):
                self._fill(index, missing, depth, count, alpha)
            sums = np.stack([self._sums[i] for i in ids.tolist()]) if len(ids) else np.empty((0, index.dim))
            if exclude is not None:
                self._remove(index, sums, ids, count, exclude)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

    def _fill(self, index: VectorIndex, missing: np.ndarray, depth: int, count: int, alpha: float) -> None:
        found_sims, found_ids = index.search(index.reconstruct_batch(missing), depth)
        # A database smaller than `depth` answers fewer columns: pad as "no neighbour".
        sims = np.full((len(missing), depth), -np.inf, np.float32)
        found = np.full((len(missing), depth), -1, np.int64)
        sims[:, : found_ids.shape[1]], found[:, : found_ids.shape[1]] = found_sims, found_ids
        weights = np.where(found >= 0, np.maximum(sims, 0.0) ** alpha, 0.0).astype(np.float32)
        known = found[:, :count]
        vectors = index.reconstruct_batch(np.where(known >= 0, known, missing[:, None]).ravel())
        vectors = vectors.reshape(len(missing), count, index.dim)
        sums = np.einsum("nc,ncd->nd", weights[:, :count], vectors)
        for row, image_id in enumerate(missing.tolist()):
            self._neighbours[image_id] = (found[row], weights[row])
            self._sums[image_id] = sums[row]

    def _remove(
        self, index: VectorIndex, sums: np.ndarray, ids: np.ndarray, count: int, exclude: int
    ) -> None:
        """In place: take `exclude` out of the sums that hold it and put each item's spare neighbour in."""
        neighbours = np.stack([self._neighbours[i][0] for i in ids.tolist()])
        weights = np.stack([self._neighbours[i][1] for i in ids.tolist()])
        hits = neighbours[:, :count] == exclude
        rows = np.flatnonzero(hits.any(axis=1))
        if not len(rows):
            return
        removed_weights = weights[rows, :count][hits[rows]]
        spares = neighbours[rows, count]
        spare_weights = np.where(spares >= 0, weights[rows, count], 0.0)
        excluded_vector = index.reconstruct_batch([exclude])[0]
        spare_vectors = index.reconstruct_batch(np.where(spares >= 0, spares, exclude))
        sums[rows] -= np.outer(removed_weights, excluded_vector)
        sums[rows] += spare_weights[:, None] * spare_vectors


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def rank(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    options: RerankOptions,
    *,
    cache: NeighbourCache | None = None,
    exclude: Sequence[int | None] | None = None,
    params: SearchParams | None = None,
    allowed_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (Q, k): the top k for every query, padded with score -inf and id -1.

    ``allowed_ids`` (a filter's matches) restricts the queries' own searches, inside the vector search;
    the database-side neighbour lists (DBA) stay those of the whole collection.

    ``params`` (nprobe, efSearch) apply to the queries' own searches; the database-side neighbour lists,
    shared by every request, are searched with the index's defaults.

    ``exclude[i]`` is an id that query i must neither find nor be helped by (leave-one-out evaluation).
    Scores of re-ordered results are cosines between the expanded query and the augmented stored vector
    (plain cosines with re-ranking off); an exact copy of the query comes first and scores 1. Each row is
    sorted by its scores (so they never increase down a row).
    Queries are processed together, so a batch costs a few FAISS calls, not a few per query.
    """
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if exclude is not None and len(exclude) != len(queries):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    excluded: list[int | None] = list(exclude) if exclude is not None else [None] * len(queries)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    if index.ntotal == 0 or len(queries) == 0:
        return scores, ids
    if not options.active:
        plain_scores, plain_ids = _search(index, queries, k, excluded, params, allowed_ids)
        width = plain_ids.shape[1]
        scores[:, :width], ids[:, :width] = plain_scores, plain_ids
        return scores, ids
    cache = cache if cache is not None else NeighbourCache()
    # Bound the (queries, depth, dim) working set whatever the depth.
    chunk = max(1, _CHUNK * options.shortlist // max(options.shortlist, k))
    for start in range(0, len(queries), chunk):
        part = slice(start, start + chunk)
        scores[part], ids[part] = _rerank(
            index, queries[part], k, options, cache, excluded[part], params, allowed_ids
        )
    return scores, ids


def _rerank(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    options: RerankOptions,
    cache: NeighbourCache,
    excluded: list[int | None],
    params: SearchParams | None = None,
    allowed_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    # k beyond the shortlist (an evaluation ranking the whole collection) re-orders all k: one score, one
    # sort, rather than re-ordered results followed by plainly ordered ones on another scale.
    depth = max(options.shortlist, k)

    def describe(candidates: np.ndarray) -> np.ndarray:
        """(Q, depth, dim) vectors that candidates are scored by (zeros where a row has fewer)."""
        if not options.database_augmentation:
            return _stored(index, candidates)
        out = np.zeros((*candidates.shape, index.dim), np.float32)
        for row, row_ids in enumerate(candidates):
            valid = row_ids >= 0
            out[row, valid] = cache.augmented(
                index, row_ids[valid], options.database_augmentation, options.alpha, excluded[row]
            )
        return out

    def plain_scores(candidates: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(Q, depth) cosine of the original queries with the stored (not augmented) candidate vectors."""
        stored = vectors if not options.database_augmentation else _stored(index, candidates)
        return _scores(stored, original, candidates)

    original = queries
    _, candidates = _search(index, queries, depth, excluded, params, allowed_ids)
    vectors = describe(candidates)
    candidate_scores = _scores(vectors, queries, candidates)
    if options.query_expansion:
        top = np.argsort(-candidate_scores, axis=1, kind="stable")[:, : options.query_expansion]
        top_scores = np.take_along_axis(candidate_scores, top, axis=1)
        weights = np.where(np.isfinite(top_scores), np.maximum(top_scores, 0.0) ** options.alpha, 0.0)
        top_vectors = np.take_along_axis(vectors, top[:, :, None], axis=1)
        queries = _unit_rows(queries + np.einsum("qn,qnd->qd", weights, top_vectors))
        _, candidates = _search(index, queries, depth, excluded, params, allowed_ids)
        vectors = describe(candidates)
        candidate_scores = _scores(vectors, queries, candidates)
    order = np.argsort(-candidate_scores, axis=1, kind="stable")
    ranked_scores = np.take_along_axis(candidate_scores, order, axis=1)
    ranked_ids = np.take_along_axis(candidates, order, axis=1)
    # An exact copy of the query (same pixels: cosine 1 up to rounding) comes first, with its plain score,
    # whatever its neighbours say: the augmented ranking could otherwise put a close neighbour above the
    # very image asked for (2 % of Corel-1K queries).
    exact = np.take_along_axis(plain_scores(candidates, vectors), order, axis=1) >= _EXACT_COPY
    if exact.any():
        first = np.argsort(~exact, axis=1, kind="stable")
        ranked_ids = np.take_along_axis(ranked_ids, first, axis=1)
        ranked_scores = np.where(
            np.take_along_axis(exact, first, axis=1), 1.0, np.take_along_axis(ranked_scores, first, axis=1)
        )
    width = min(k, ranked_ids.shape[1])
    scores[:, :width], ids[:, :width] = ranked_scores[:, :width], ranked_ids[:, :width]
    return scores, ids


def _stored(index: VectorIndex, ids: np.ndarray) -> np.ndarray:
    """(Q, n, dim) stored vectors of the ids (zeros where the id is -1)."""
    out = np.zeros((*ids.shape, index.dim), np.float32)
    for row, row_ids in enumerate(ids):
        valid = row_ids >= 0
        out[row, valid] = index.reconstruct_batch(row_ids[valid])
    return out


def _scores(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    out = np.einsum("qnd,qd->qn", vectors, queries)
    return np.where(candidates >= 0, out, -np.inf).astype(np.float32)


def _search(
    index: VectorIndex,
    queries: np.ndarray,
    depth: int,
    excluded: list[int | None],
    params: SearchParams | None = None,
    allowed_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain top `depth` of every query, each without its excluded id; (Q, ≤ depth), padded with -1."""
    extra = int(any(e is not None for e in excluded))
    found_scores, found_ids = index.search(queries, depth + extra, allowed_ids=allowed_ids, params=params)
    width = min(depth, found_ids.shape[1])
    scores = np.full((len(queries), width), -np.inf, np.float32)
    ids = np.full((len(queries), width), -1, np.int64)
    for row, exclude in enumerate(excluded):
        keep = found_ids[row] >= 0
        if exclude is not None:
            keep &= found_ids[row] != exclude
        kept = found_ids[row][keep][:width]
        ids[row, : len(kept)] = kept
        scores[row, : len(kept)] = found_scores[row][keep][:width]
    return scores, ids


def options_from_settings(settings: Settings) -> RerankOptions:
    """The service's default re-ranking, which requests may override."""
    return RerankOptions(
        query_expansion=settings.query_expansion,
        database_augmentation=settings.database_augmentation,
        alpha=settings.rerank_alpha,
        shortlist=settings.rerank_shortlist,
    )

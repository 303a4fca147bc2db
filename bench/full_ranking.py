"""Whole-collection rankings for the quality bench, batched: what app/search/reranking.rank (and, with
verification, app/search/verification.rank_verified) answers when asked for every stored image.

An evaluation asks for the whole collection (mAP over all relevant items), and rank() then re-orders every
candidate one query at a time in bounded memory: 0.2 s a query on Corel-1K, seconds on CIFAR-10's 9,000
pictures, most of a full bench run. When the candidates are the whole collection the arithmetic is the same
for every query, so here the database-side augmented vectors are computed once, a leave-one-out query
changes only the few rows whose neighbour lists hold it, and queries go through in blocks of matrix
products. bench/quality.py checks these rankings against rank() and rank_verified() themselves on a sample
of queries in every run, and tests/bench/test_full_ranking.py on random data, so the figures stay the
product's. Ties between exactly equal scores may come out in another order (no effect on the figures).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.search.reranking import RerankOptions
from app.search.verification import probability
from index import VectorIndex

__all__ = ["FullRanking", "blend_verified"]

_BLOCK = 256  # queries per block: a (256, N) float32 score matrix
_EXACT_COPY = 0.9999  # as app/search/reranking.py: a stored image that is the query itself comes first


class FullRanking:
    """Every database item ranked for each query, as rank(index, q, N - excluded, options) ranks them.

    `vectors` are the database's rows (position i = database item i); results are positions."""

    def __init__(self, vectors: np.ndarray, options: RerankOptions) -> None:
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.options = options
        count = options.database_augmentation if options.active else 0
        self.count = count
        if not count:
            self.described = self.vectors
            return
        n, dim = self.vectors.shape
        index = VectorIndex(dim, "bench")
        index.add(np.arange(n, dtype=np.int64), self.vectors)
        depth = count + 1  # as NeighbourCache: the spare stands in for an excluded neighbour
        found_sims, found_ids = index.search(self.vectors, depth)
        sims = np.full((n, depth), -np.inf, np.float32)
        found = np.full((n, depth), -1, np.int64)
        sims[:, : found_ids.shape[1]], found[:, : found_ids.shape[1]] = found_sims, found_ids
        weights = np.where(found >= 0, np.maximum(sims, 0.0) ** options.alpha, 0.0).astype(np.float32)
        known = found[:, :count]
        gathered = self.vectors[np.where(known >= 0, known, np.arange(n)[:, None])]
        self.sums = np.einsum("nc,ncd->nd", weights[:, :count], gathered)
        self.neighbours, self.weights = found, weights
        self.described = _unit_rows(self.sums)
        # For each item, the rows whose first `count` neighbours hold it (what leaving it out changes).
        flat = known.ravel()
        order = np.argsort(flat, kind="stable")
        valid = flat[order] >= 0
        order = order[valid]
        self._holders_rows = order // count
        self._holders_cols = order % count
        self._holders_start = np.searchsorted(flat[order], np.arange(n + 1))

    def _left_out(self, excluded: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows whose augmented vector held `excluded`, and those vectors without it (the spare in)."""
        lo, hi = self._holders_start[excluded], self._holders_start[excluded + 1]
        rows, cols = self._holders_rows[lo:hi], self._holders_cols[lo:hi]
        if not len(rows):
            return rows, np.empty((0, self.vectors.shape[1]), np.float32)
        sums = self.sums[rows].copy()
        sums -= np.outer(self.weights[rows, cols], self.vectors[excluded])
        spares = self.neighbours[rows, self.count]
        spare_weights = np.where(spares >= 0, self.weights[rows, self.count], 0.0)
        sums += spare_weights[:, None] * self.vectors[np.where(spares >= 0, spares, excluded)]
        return rows, _unit_rows(sums)

    def rank(
        self, queries: np.ndarray, exclude: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (Q, N) or (Q, N - 1) with `exclude` (one position per query)."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.vectors.shape[1])
        width = len(self.vectors) - int(exclude is not None)
        scores = np.empty((len(queries), width), np.float32)
        ids = np.empty((len(queries), width), np.int64)
        for start in range(0, len(queries), _BLOCK):
            part = slice(start, start + _BLOCK)
            left = None if exclude is None else list(exclude[part])
            scores[part], ids[part] = self._rank_block(queries[part], left)
        return scores, ids

    def _rank_block(self, queries: np.ndarray, exclude: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        options = self.options
        patches = [self._left_out(e) if self.count else None for e in exclude] if exclude else None
        original = queries

        def scored(q: np.ndarray) -> np.ndarray:
            out = q @ self.described.T
            if exclude is not None:
                for row, excluded in enumerate(exclude):
                    patch = patches[row] if patches else None
                    if patch is not None and len(patch[0]):
                        out[row, patch[0]] = patch[1] @ q[row]
                    out[row, excluded] = -np.inf
            return out

        scores = scored(queries)
        if options.active and options.query_expansion:
            top = np.argsort(-scores, axis=1, kind="stable")[:, : options.query_expansion]
            top_scores = np.take_along_axis(scores, top, axis=1)
            weights = np.where(np.isfinite(top_scores), np.maximum(top_scores, 0.0) ** options.alpha, 0.0)
            top_vectors = self.described[top]
            if patches:
                for row, patch in enumerate(patches):
                    if patch is None or not len(patch[0]):
                        continue
                    where = {int(r): i for i, r in enumerate(patch[0].tolist())}
                    for column, position in enumerate(top[row].tolist()):
                        if position in where:
                            top_vectors[row, column] = patch[1][where[position]]
            expanded = queries + np.einsum("qn,qnd->qd", weights.astype(np.float32), top_vectors)
            queries = _unit_rows(expanded)
            scores = scored(queries)
        order = np.argsort(-scores, axis=1, kind="stable")
        ranked_scores = np.take_along_axis(scores, order, axis=1)
        if options.active:
            exact = np.take_along_axis(original @ self.vectors.T, order, axis=1) >= _EXACT_COPY
            if exclude is not None:
                exact &= order != np.array(exclude)[:, None]
            if exact.any():
                first = np.argsort(~exact, axis=1, kind="stable")
                order = np.take_along_axis(order, first, axis=1)
                ranked_scores = np.where(
                    np.take_along_axis(exact, first, axis=1), 1.0, np.take_along_axis(ranked_scores, first, 1)
                )
        if exclude is not None:  # the excluded item scored -inf: it is last
            order, ranked_scores = order[:, :-1], ranked_scores[:, :-1]
        return ranked_scores.astype(np.float32), order


def blend_verified(
    scores: np.ndarray,
    ids: np.ndarray,
    checked: np.ndarray,
    counts: np.ndarray,
    plain_scores: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row of rank_verified at full depth: the `checked` ids' scores become P(same) + (1 - P) * score,
    P from their inliers and plain cosines; re-sorted stably. Returns scores, ids, P(same) per result."""
    chance = probability(counts, plain_scores)
    where = {int(i): c for c, i in enumerate(ids.tolist())}
    columns = np.array([where[int(i)] for i in checked.tolist()], np.int64)
    blended = scores.astype(np.float64)
    p_row = np.zeros(len(ids), np.float64)
    base = blended[columns]
    blended[columns] = np.where(np.isfinite(base), chance + (1.0 - chance) * base, base)
    p_row[columns] = chance
    order = np.argsort(-blended, kind="stable")
    return blended[order], ids[order], p_row[order]


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

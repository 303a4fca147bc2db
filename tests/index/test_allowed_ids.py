"""search(..., allowed_ids=...) filters inside the vector search: k allowed results whenever k are stored."""

from __future__ import annotations

import numpy as np
import pytest

from index import INDEX_TYPES
from tests.helpers.vectors import FINGERPRINT, unit_vectors
from tests.index.test_types import N, built, clustered


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_a_rare_filter_still_returns_k(kind: str, rng: np.random.Generator) -> None:
    ids = np.arange(1, N + 1, dtype=np.int64)
    vectors = clustered(rng, N)
    index = built(kind, vectors, ids)
    allowed = rng.choice(ids, size=N // 40, replace=False)  # 15 of 600: fewer than 1 in 20
    queries = vectors[:8]
    scores, found = index.search(queries, 10, allowed_ids=allowed)
    assert found.shape == (8, 10)
    assert np.isin(found, allowed).all(), "every result is an allowed id, and there are 10 of them"
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # The same top 10 as an exact scan of the allowed vectors (IVF-PQ scores its compressed codes).
    exact = np.argsort(-(queries @ vectors[allowed - 1].T), axis=1)[:, :10]
    overlap = np.mean([len(set(found[r]) & set(allowed[exact[r]])) / 10 for r in range(8)])
    assert overlap >= (0.7 if kind == "ivf_pq" else 1.0)


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_fewer_allowed_than_k_pads_and_unknown_ids_are_ignored(kind: str, rng: np.random.Generator) -> None:
    ids = np.arange(1, N + 1, dtype=np.int64)
    index = built(kind, clustered(rng, N), ids)
    scores, found = index.search(unit_vectors(rng, 2), 5, allowed_ids=[3, 7, 10**12])
    assert found.shape == (2, 5)
    assert set(found[0][:2]) == {3, 7} and (found[:, 2:] == -1).all()
    assert np.isneginf(scores[:, 2:]).all()
    _, none = index.search(unit_vectors(rng, 1), 3, allowed_ids=np.array([], dtype=np.int64))
    assert (none == -1).all()


def test_removed_ids_are_never_found_through_the_filter(rng: np.random.Generator) -> None:
    ids = np.arange(1, N + 1, dtype=np.int64)
    vectors = clustered(rng, N)
    for kind in ("flat", "hnsw"):
        index = built(kind, vectors, ids)
        index.remove([5, 6])
        _, found = index.search(vectors[4:6], 3, allowed_ids=[5, 6, 9])
        assert set(found.ravel()) == {9, -1}, kind
        assert index.fingerprint == FINGERPRINT

"""The bench's batched whole-collection ranking gives what the service's own ranking functions give."""

from __future__ import annotations

import numpy as np
import pytest

from app.search.reranking import NeighbourCache, RerankOptions, rank
from app.search.verification import probability
from bench.full_ranking import FullRanking, blend_verified
from index import VectorIndex


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit rows around a few centres, so that neighbourhoods (and re-ranking) mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    rows = centres[rng.integers(0, 5, n)] + 0.6 * rng.normal(size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _same_ranking(ids: np.ndarray, scores: np.ndarray, expected: np.ndarray, wanted: np.ndarray) -> None:
    """Same items in the same order, up to the order of exactly tied scores; each with the service's score."""
    assert ids.shape == expected.shape
    np.testing.assert_allclose(scores, wanted, atol=1e-5)
    for row in range(len(ids)):
        assert sorted(ids[row].tolist()) == sorted(expected[row].tolist())
        theirs = dict(zip(expected[row].tolist(), wanted[row].tolist(), strict=True))
        np.testing.assert_allclose([theirs[i] for i in ids[row].tolist()], scores[row], atol=1e-5)
    assert (ids == expected).mean() > 0.95  # ties are rare: nearly every position is the same item


def _index(vectors: np.ndarray) -> VectorIndex:
    index = VectorIndex(vectors.shape[1], "test")
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    return index


OPTIONS = [
    RerankOptions.off(),
    RerankOptions(query_expansion=5, database_augmentation=0),
    RerankOptions(query_expansion=0, database_augmentation=4),
    RerankOptions(query_expansion=10, database_augmentation=10, alpha=3.0, shortlist=20),
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: f"qe{o.query_expansion}-dba{o.database_augmentation}"
)
def test_leave_one_out_equals_rank(options: RerankOptions) -> None:
    vectors = _clustered(120, 16, seed=1)
    queries = np.arange(0, 120, 7)
    expected_scores, expected = rank(
        _index(vectors), vectors[queries], 119, options, cache=NeighbourCache(), exclude=queries.tolist()
    )
    scores, ids = FullRanking(vectors, options).rank(vectors[queries], exclude=queries.tolist())
    assert ids.shape == (len(queries), 119)
    _same_ranking(ids, scores, expected, expected_scores)
    assert not (ids == queries[:, None]).any()


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: f"qe{o.query_expansion}-dba{o.database_augmentation}"
)
def test_queries_outside_the_database_equal_rank(options: RerankOptions) -> None:
    vectors = _clustered(150, 16, seed=2)
    database, queries = vectors[:130], vectors[130:].copy()
    queries[0] = database[17]  # an exact copy of a stored image: first, score 1, when re-ranking
    expected_scores, expected = rank(_index(database), queries, 130, options, cache=NeighbourCache())
    scores, ids = FullRanking(database, options).rank(queries)
    _same_ranking(ids, scores, expected, expected_scores)
    assert ids[0, 0] == 17


def test_blend_puts_a_verified_copy_first_and_keeps_the_rest_in_order() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    ids = np.array([4, 2, 9, 1])
    blended, order, chances = blend_verified(
        scores, ids, np.array([9, 2]), np.array([60, 0]), np.array([0.7, 0.8], np.float32)
    )
    assert order.tolist() == [9, 4, 2, 1]
    p = float(probability(60))
    assert blended[0] == pytest.approx(p + (1 - p) * 0.7)
    assert chances[0] == pytest.approx(p) and chances[3] == 0.0

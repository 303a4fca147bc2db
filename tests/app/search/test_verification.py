"""Geometric verification in the ranking: a verified copy is never pushed below mere look-alikes."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from app.search.reranking import RerankOptions, rank
from app.search.verification import (
    MIN_INLIERS,
    NEAR_IDENTICAL,
    QueryFeatures,
    VerifyOptions,
    probability,
    rank_verified,
)
from index import VectorIndex
from models.local_features import LocalFeatures, extract
from tests.models.test_local_features import edited, scene

N, DIM = 30, 8


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@cache
def _stored(image_id: int) -> LocalFeatures:
    return extract(scene(image_id))


def stored(image_ids: Sequence[int]) -> list[LocalFeatures | None]:
    return [_stored(i) for i in image_ids]


def setup() -> tuple[VectorIndex, np.ndarray, int]:
    """One cluster (a category) and a query at its centre; the copied picture is the query's third
    nearest, so that the plain and the re-ranked order both put look-alikes above it."""
    rng = np.random.default_rng(3)
    centre = rng.normal(size=DIM)
    vectors = unit(centre + 0.8 * rng.normal(size=(N, DIM)))  # cosines well below NEAR_IDENTICAL
    index = VectorIndex(DIM, "test")
    index.add(np.arange(N, dtype=np.int64), vectors)
    query = unit(centre)[None, :]
    _, plain_ids = index.search(query, 3)
    return index, query, int(plain_ids[0, 2])


def test_a_verified_copy_comes_first_even_where_re_ranking_demotes_it() -> None:
    index, query, copied = setup()
    options = RerankOptions(query_expansion=5, database_augmentation=5, alpha=3.0, shortlist=N)
    _, reranked_ids = rank(index, query, N, options)
    assert reranked_ids[0, 0] != copied  # the premise: the ranking alone puts look-alikes first
    assert (index.search(query, N)[0] < NEAR_IDENTICAL).all()  # only local evidence can decide here
    features = QueryFeatures(image=edited(scene(copied)))
    ranked = rank_verified(index, query, 10, options, VerifyOptions(10), [features], stored)
    assert ranked.ids[0, 0] == copied
    assert ranked.same[0, 0] and not ranked.same[0, 1:].any()
    assert ranked.inliers[0, 0] >= MIN_INLIERS
    assert (np.diff(ranked.scores[0]) <= 0).all()  # sorted by the scores it reports
    assert ranked.scores[0, 0] <= 1.0
    # Where there is no evidence of a copy, the order and scores are the re-ranking's own.
    others = ranked.ids[0, 1:]
    expected = [i for i in reranked_ids[0].tolist() if i != copied][: len(others)]
    assert others.tolist() == expected


def test_without_query_features_nothing_changes() -> None:
    index, query, _ = setup()
    options = RerankOptions(query_expansion=5, database_augmentation=5, alpha=3.0, shortlist=N)
    scores, ids = rank(index, query, 10, options)
    ranked = rank_verified(index, query, 10, options, VerifyOptions(10), [None], stored)
    np.testing.assert_array_equal(ranked.ids, ids)
    np.testing.assert_array_equal(ranked.scores, scores)
    assert (ranked.inliers == -1).all() and not ranked.same.any()


def test_the_probability_rises_with_the_inliers_and_decides_at_min_inliers() -> None:
    p = probability(np.arange(0, 60))
    assert (np.diff(p) >= 0).all() and (np.diff(p[:30]) > 0).all()
    assert p[0] < 0.01 and p[-1] > 0.99
    assert probability(MIN_INLIERS) >= 0.5 > probability(MIN_INLIERS - 1)

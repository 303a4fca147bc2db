"""The one ranking function: query expansion, database-side augmentation, leave-one-out, prefixes, caching."""

from __future__ import annotations

import numpy as np
import pytest

from app.collection.facade import Collection
from app.config import Settings
from app.encoders import encoder_from_settings
from app.learn.evaluation import retrieval_metrics
from app.search.reranking import NeighbourCache, RerankOptions, rank
from index import VectorIndex
from tests.helpers.images import image_bytes

N, DIM = 60, 8


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def vectors() -> np.ndarray:
    """Three noisy clusters, so neighbourhoods mean something; no ties."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, DIM))
    return unit(centres[np.arange(N) % 3] + 0.6 * rng.normal(size=(N, DIM)))


def index_of(vectors: np.ndarray, ids: np.ndarray | None = None) -> VectorIndex:
    ids = np.arange(len(vectors), dtype=np.int64) if ids is None else ids
    index = VectorIndex(vectors.shape[1], "test")
    index.add(ids, vectors)
    return index


def reference(vectors: np.ndarray, query: np.ndarray, qe: int, dba: int, alpha: float) -> np.ndarray:
    """Full re-ranking written directly from the paper's definitions (shortlist = whole database)."""
    sims = vectors @ vectors.T
    augmented = vectors
    if dba:
        order = np.argsort(-sims, axis=1)[:, :dba]
        weights = np.take_along_axis(sims, order, 1).clip(min=0) ** alpha
        augmented = unit(np.einsum("nk,nkd->nd", weights, vectors[order]))
    if qe:
        scores = augmented @ query
        top = np.argsort(-scores)[:qe]
        query = unit(query + (scores[top].clip(min=0) ** alpha) @ augmented[top])
    return np.argsort(-(augmented @ query))


def test_off_is_the_plain_index_search(vectors: np.ndarray) -> None:
    index = index_of(vectors)
    scores, ids = rank(index, vectors[:5], 7, RerankOptions.off())
    plain_scores, plain_ids = index.search(vectors[:5], 7)
    np.testing.assert_array_equal(ids, plain_ids)
    np.testing.assert_allclose(scores, plain_scores)


@pytest.mark.parametrize(("qe", "dba"), [(4, 0), (0, 4), (4, 4), (10, 6)])
def test_matches_the_definitions_when_the_shortlist_is_everything(
    vectors: np.ndarray, qe: int, dba: int
) -> None:
    index = index_of(vectors)
    options = RerankOptions(query_expansion=qe, database_augmentation=dba, alpha=3.0, shortlist=N)
    query = unit(vectors[0] + 0.3 * vectors[7])
    _, ids = rank(index, query, N, options)
    np.testing.assert_array_equal(ids[0], reference(vectors, query, qe, dba, 3.0))


def test_leaving_a_query_out_equals_a_database_without_it(vectors: np.ndarray) -> None:
    """What makes `cbir evaluate` honest: the excluded query neither appears nor helps any other item."""
    options = RerankOptions(query_expansion=5, database_augmentation=5, alpha=3.0, shortlist=20)
    full = index_of(vectors)
    for query_id in (0, 13, 59):
        others = np.setdiff1d(np.arange(N), [query_id])
        without = index_of(vectors[others], others)
        scores, ids = rank(full, vectors[query_id], N - 1, options, exclude=[query_id])
        expected_scores, expected_ids = rank(without, vectors[query_id], N - 1, options)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
        assert query_id not in ids


def test_every_k_up_to_the_shortlist_is_a_prefix_of_one_ranking(vectors: np.ndarray) -> None:
    """Every request (k <= 100 <= shortlist) gets a prefix of one ranking; a larger k re-orders all k."""
    index = index_of(vectors)
    options = RerankOptions(query_expansion=3, database_augmentation=3, alpha=3.0, shortlist=15)
    _, shortlist = rank(index, vectors[:4], 15, options)
    for k in (1, 10, 15):
        _, ids = rank(index, vectors[:4], k, options)
        np.testing.assert_array_equal(ids, shortlist[:, :k])
    scores, everything = rank(index, vectors[:4], N, options)
    _, deeper = rank(index, vectors[:4], N, RerankOptions(3, 3, 3.0, shortlist=N))
    np.testing.assert_array_equal(everything, deeper)
    assert all(len(set(row.tolist())) == N for row in everything)
    assert (np.diff(scores, axis=1) <= 0).all()  # sorted by its scores, beyond the shortlist too


def test_the_cache_follows_changes_of_the_index(vectors: np.ndarray) -> None:
    index = index_of(vectors[:40], np.arange(40, dtype=np.int64))
    options = RerankOptions(query_expansion=3, database_augmentation=4, alpha=3.0, shortlist=30)
    cache = NeighbourCache()
    rank(index, vectors[:3], 10, options, cache=cache)
    index.add(np.arange(40, N, dtype=np.int64), vectors[40:])
    index.remove([5])
    _, cached = rank(index, vectors[:3], 10, options, cache=cache)
    _, fresh = rank(index, vectors[:3], 10, options, cache=NeighbourCache())
    np.testing.assert_array_equal(cached, fresh)
    assert 5 not in cached


def test_small_and_empty_indexes_pad_with_minus_one(vectors: np.ndarray) -> None:
    options = RerankOptions()
    scores, ids = rank(index_of(vectors[:3]), vectors[0], 5, options)
    assert sorted(ids[0, :3].tolist()) == [0, 1, 2]
    assert ids[0, 3:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 3:]).all()
    _, none = rank(VectorIndex(DIM, "empty"), vectors[0], 3, options)
    assert none.tolist() == [[-1, -1, -1]]


def test_bad_options_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="neighbour counts"):
        RerankOptions(query_expansion=-1)
    with pytest.raises(ValueError, match="shortlist"):
        RerankOptions(shortlist=0)
    assert RerankOptions().overridden(0, None) == RerankOptions(query_expansion=0)


def test_evaluation_ranks_with_the_options_it_is_given(vectors: np.ndarray) -> None:
    labels = np.arange(N) % 3
    options = RerankOptions(query_expansion=5, database_augmentation=5, alpha=3.0, shortlist=N)
    mean_ap, precision = retrieval_metrics(vectors, labels, "test", options)
    aps, hits10 = [], 0
    for query_id in range(N):
        others = np.setdiff1d(np.arange(N), [query_id])
        order = others[reference(vectors[others], vectors[query_id], 5, 5, 3.0)]
        hits = labels[order] == labels[query_id]
        aps.append((np.cumsum(hits) / np.arange(1, N))[hits].mean())
        hits10 += int(hits[:10].sum())
    assert mean_ap == pytest.approx(float(np.mean(aps)), abs=1e-6)
    assert precision[10] == pytest.approx(hits10 / (N * 10))
    plain_map, _ = retrieval_metrics(vectors, labels, "test")
    assert plain_map != pytest.approx(mean_ap)


def test_the_service_searches_through_the_same_function(settings: Settings) -> None:
    collection = Collection.open(settings, encoder_from_settings(settings))
    for seed in range(12):
        collection.add_upload(image_bytes(seed), f"{seed}.jpg")
    assert collection.rerank.active  # the default configuration re-ranks
    query = image_bytes(3)
    vector = collection.embed_query(query)
    for options in (collection.rerank, RerankOptions.off()):
        hits = collection.search_image(query, 8, options)
        _, ids = rank(collection.index, vector, 8, options)
        assert [hit.image.id for hit in hits] == ids[0].tolist()
    collection.close()


def test_an_exact_copy_comes_first_and_scores_never_increase(vectors: np.ndarray) -> None:
    index = index_of(vectors)
    options = RerankOptions(query_expansion=8, database_augmentation=8, alpha=3.0, shortlist=30)
    scores, ids = rank(index, vectors, 40, options)
    assert (ids[:, 0] == np.arange(N)).all()
    np.testing.assert_allclose(scores[:, 0], 1.0)
    assert (np.diff(scores, axis=1) <= 0).all()

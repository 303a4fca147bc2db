"""In-memory behaviour of VectorIndex: add, search, remove, reconstruct and input validation."""

from __future__ import annotations

import numpy as np
import pytest

from index import IndexSpec, VectorIndex
from tests.helpers.vectors import DIM, FINGERPRINT, unit_vectors

Filled = tuple[VectorIndex, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------- add / search


def test_each_vector_is_its_own_top1_and_ids_are_preserved(filled: Filled) -> None:
    index, ids, vectors = filled
    scores, found = index.search(vectors, k=5)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert scores.shape == found.shape == (200, 5)
    np.testing.assert_array_equal(found[:, 0], ids)
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores are sorted best first"


def test_len_ntotal_ids_and_contains(filled: Filled) -> None:
    index, ids, _ = filled
    assert len(index) == index.ntotal == 200
    np.testing.assert_array_equal(index.ids(), np.sort(ids))
    assert index.ids().dtype == np.int64
    assert int(ids[0]) in index and np.int64(ids[0]) in index
    assert 5 not in index
    assert "x" not in index and True not in index and 1.0e12 not in index


def test_single_query_vector_is_treated_as_a_batch_of_one(filled: Filled) -> None:
    index, ids, vectors = filled
    scores, found = index.search(vectors[3], k=1)
    assert scores.shape == found.shape == (1, 1)
    assert found[0, 0] == ids[3]


def test_k_larger_than_ntotal_is_clipped(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    empty_index.add(np.array([4, 8, 15]), unit_vectors(rng, 3))
    scores, found = empty_index.search(unit_vectors(rng, 2), k=10)
    assert scores.shape == found.shape == (2, 3)
    assert set(found[0].tolist()) == {4, 8, 15}, "no -1 padding"


def test_empty_index_search_returns_empty_rows(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    scores, found = empty_index.search(unit_vectors(rng, 4), k=3)
    assert scores.shape == found.shape == (4, 0)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert empty_index.ids().shape == (0,)


@pytest.mark.parametrize("k", [0, -1, True, 2.0])
def test_invalid_k_is_rejected(filled: Filled, k: object) -> None:
    index, _, vectors = filled
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        index.search(vectors[:1], k=k)  # type: ignore[arg-type]


def test_other_int_and_float_dtypes_are_converted(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    vectors = unit_vectors(rng, 3)
    empty_index.add(np.array([1, 2, 3], dtype=np.uint16), vectors.astype(np.float64))
    _, found = empty_index.search(vectors.astype(np.float16), k=1)
    np.testing.assert_array_equal(found[:, 0], [1, 2, 3])


def test_non_contiguous_vectors_are_accepted(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    vectors = np.asfortranarray(unit_vectors(rng, 5))
    empty_index.add(np.arange(5), vectors)
    _, found = empty_index.search(vectors[::2], k=1)
    np.testing.assert_array_equal(found[:, 0], [0, 2, 4])


def test_empty_batch_is_a_no_op(empty_index: VectorIndex) -> None:
    empty_index.add(np.array([]), np.empty((0, DIM)))
    assert len(empty_index) == 0


def test_add_in_several_batches(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    a, b = unit_vectors(rng, 10), unit_vectors(rng, 10)
    empty_index.add(np.arange(10), a)
    empty_index.add(np.arange(100, 110), b)
    _, found = empty_index.search(np.vstack([a, b]), k=1)
    np.testing.assert_array_equal(found[:, 0], np.r_[np.arange(10), np.arange(100, 110)])


# ---------------------------------------------------------------------- duplicates


def test_duplicate_id_already_present_is_rejected(filled: Filled, rng: np.random.Generator) -> None:
    index, ids, _ = filled
    with pytest.raises(ValueError, match=rf"already in the index: \[{ids[7]}\]"):
        index.add(np.array([1, ids[7]]), unit_vectors(rng, 2))
    assert len(index) == 200 and 1 not in index, "a rejected batch adds nothing"


def test_duplicate_id_within_batch_is_rejected(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"duplicates within the batch: \[3\]"):
        empty_index.add(np.array([3, 4, 3]), unit_vectors(rng, 3))
    assert len(empty_index) == 0


def test_negative_ids_are_rejected(empty_index: VectorIndex, rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        empty_index.add(np.array([-1]), unit_vectors(rng, 1))


def test_removed_id_can_be_added_again(filled: Filled, rng: np.random.Generator) -> None:
    index, ids, _ = filled
    new = unit_vectors(rng, 1)
    assert index.remove([int(ids[0])]) == 1
    index.add(ids[:1], new)
    np.testing.assert_allclose(index.reconstruct(int(ids[0])), new[0])


# ---------------------------------------------------------------------- validation messages


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (
            np.arange(3),
            np.zeros((3, DIM + 1), np.float32),
            rf"shape \(3, {DIM}\).*got shape \(3, {DIM + 1}\)",
        ),
        (np.arange(3), np.zeros((2, DIM), np.float32), rf"shape \(3, {DIM}\).*got shape \(2, {DIM}\)"),
        (np.arange(3), np.zeros(DIM, np.float32), rf"shape \(3, {DIM}\).*got shape \({DIM},\)"),
        (np.arange(3), np.zeros((3, DIM), np.int64), "floating point.*got .*dtype int64"),
        (np.arange(3).reshape(3, 1), np.zeros((3, DIM), np.float32), r"shape \(N,\), got shape \(3, 1\)"),
        (np.arange(3.0), np.zeros((3, DIM), np.float32), "integer array.*dtype float64"),
        (np.array(["a", "b"]), np.zeros((2, DIM), np.float32), "integer array.*dtype <U1"),
        (np.array([2**64 - 1], np.uint64), np.zeros((1, DIM), np.float32), "fit in int64"),
    ],
)
def test_add_rejects_bad_input_naming_shape_and_dtype(
    empty_index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        empty_index.add(ids, vectors)
    assert len(empty_index) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])
def test_add_rejects_non_finite_vectors(
    empty_index: VectorIndex, rng: np.random.Generator, bad: float
) -> None:
    vectors = unit_vectors(rng, 3).astype(np.float64)
    vectors[1, 5] = bad  # 1e39 overflows to inf in float32
    with pytest.raises(ValueError, match=r"NaN or infinite.*rows \[1\]"):
        empty_index.add(np.arange(3), vectors)
    assert len(empty_index) == 0


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        (
            np.zeros((2, DIM - 1), np.float32),
            rf"queries must have shape \(N, {DIM}\).*got shape \(2, {DIM - 1}\)",
        ),
        (np.zeros(DIM + 3, np.float32), rf"got shape \({DIM + 3},\) dtype float32"),
        (np.zeros((1, 1, DIM), np.float32), rf"got shape \(1, 1, {DIM}\)"),
        (np.zeros((2, DIM), np.int32), "floating point.*dtype int32"),
        (np.full((1, DIM), np.nan, np.float32), "NaN"),
    ],
)
def test_search_rejects_bad_queries(filled: Filled, queries: np.ndarray, message: str) -> None:
    index, _, _ = filled
    with pytest.raises(ValueError, match=message):
        index.search(queries, k=1)


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="dim"):
        VectorIndex(0, FINGERPRINT)
    with pytest.raises(ValueError, match="fingerprint"):
        VectorIndex(DIM, "")
    with pytest.raises(ValueError, match="not one of flat, ivf_flat, ivf_pq, hnsw"):
        IndexSpec("NoSuchIndex42")
    with pytest.raises(ValueError, match="must be an IndexSpec"):
        VectorIndex(DIM, FINGERPRINT, "IDMap,Flat")  # type: ignore[arg-type]


def test_attributes_and_repr(filled: Filled) -> None:
    index, _, _ = filled
    assert (index.dim, index.fingerprint, index.description) == (DIM, FINGERPRINT, "Flat")
    assert "ntotal=200" in repr(index)


# ---------------------------------------------------------------------- remove


def test_remove_then_search_never_returns_removed_ids(filled: Filled) -> None:
    index, ids, vectors = filled
    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    assert len(index) == 200 - len(gone)
    _, found = index.search(vectors, k=len(index))
    assert not np.isin(found, gone).any()
    assert all(int(i) not in index for i in gone)
    np.testing.assert_array_equal(index.ids(), np.sort(np.setdiff1d(ids, gone)))
    kept = np.flatnonzero(~np.isin(ids, gone))
    np.testing.assert_array_equal(found[kept, 0], ids[kept])


def test_remove_ignores_unknown_ids_and_accepts_sequences(filled: Filled) -> None:
    index, ids, _ = filled
    assert index.remove([1, 2, int(ids[0])]) == 1
    assert index.remove([int(ids[0])]) == 0, "removing twice is harmless"
    assert index.remove(np.array([], dtype=np.int64)) == 0
    assert index.remove([]) == 0
    assert len(index) == 199


def test_remove_everything_leaves_a_usable_empty_index(filled: Filled) -> None:
    index, ids, vectors = filled
    assert index.remove(ids) == 200
    assert index.search(vectors[:2], k=3)[1].shape == (2, 0)


def test_remove_rejects_non_integer_ids(filled: Filled) -> None:
    index, _, _ = filled
    with pytest.raises(ValueError, match=r"integer array.*float64"):
        index.remove(np.array([1.5]))


# ---------------------------------------------------------------------- reconstruct


def test_reconstruct_returns_the_stored_vector(filled: Filled) -> None:
    index, ids, vectors = filled
    for row in (0, 57, 199):
        got = index.reconstruct(int(ids[row]))
        assert got.dtype == np.float32 and got.shape == (DIM,)
        np.testing.assert_array_equal(got, vectors[row])


def test_reconstruct_unknown_or_removed_id_raises_key_error(filled: Filled) -> None:
    index, ids, _ = filled
    with pytest.raises(KeyError):
        index.reconstruct(12345)
    index.remove([int(ids[0])])
    with pytest.raises(KeyError):
        index.reconstruct(int(ids[0]))

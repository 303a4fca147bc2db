"""Every index type keeps the VectorIndex contract: add, remove, search, range_search, reconstruct, files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from index import INDEX_TYPES, IndexFileError, IndexSpec, SearchParams, VectorIndex, VectorIndexError, store
from index.build import build_index
from index.factory import sample_rows, spec_for, train_sample_size
from tests.helpers.vectors import DIM, FINGERPRINT, unit_vectors

N = 600


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around 20 centres, like descriptors of related pictures (and unlike uniform noise)."""
    centres = unit_vectors(rng, 20)
    x = centres[rng.integers(20, size=n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def built(kind: str, vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
    spec = spec_for(kind, len(vectors), DIM)
    assert spec.type == kind
    sample = vectors[sample_rows(len(vectors), train_sample_size(spec))] if spec.needs_training else None
    return build_index(DIM, FINGERPRINT, spec, [(ids, vectors)], train_sample=sample)


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ids = (10**9 + np.arange(N, dtype=np.int64) * 13)[rng.permutation(N)]
    return ids, clustered(rng, N)


def exhaustive(kind: str, spec: IndexSpec) -> SearchParams:
    """Search parameters that make an IVF or HNSW index look everywhere (results then equal Flat's)."""
    return SearchParams(nprobe=spec.nlist) if spec.is_ivf else SearchParams(ef_search=N)


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_each_type_round_trips(kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    ids, vectors = data
    index = built(kind, vectors, ids)
    assert index.ntotal == N and index.index_type == kind
    assert np.array_equal(index.ids(), np.sort(ids))
    params = exhaustive(kind, index.spec)

    scores, found = index.search(vectors[:50], 10, params)
    exact = (vectors[:50] @ vectors.T).argsort(axis=1)[:, ::-1][:, :10]
    recall = np.mean([len(np.intersect1d(f, ids[e])) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= (0.6 if kind == "ivf_pq" else 0.99), recall
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "best first"

    rebuilt = index.reconstruct_batch(ids[:20])
    if kind == "ivf_pq":  # compressed: close, not equal
        assert np.mean(np.sum(rebuilt * vectors[:20], axis=1)) > 0.8
    else:
        np.testing.assert_array_equal(rebuilt, vectors[:20])
    np.testing.assert_array_equal(index.reconstruct(int(ids[3])), rebuilt[3])

    gone = ids[:100]
    assert index.remove(np.concatenate([gone, [7]])) == 100
    assert index.remove(gone) == 0, "removing twice is harmless"
    assert index.ntotal == N - 100 and not np.isin(gone, index.ids()).any()
    _, found = index.search(vectors[:100], 20, params)
    assert not np.isin(found, gone).any(), "a removed id is never returned"
    with pytest.raises(KeyError):
        index.reconstruct(int(gone[0]))
    [(_, in_range)] = index.range_search(vectors[150], 0.5, params)
    assert int(ids[150]) in in_range.tolist() and not np.isin(in_range, gone).any()

    index.add(gone[:10], vectors[:10])  # ids freed by a removal can be used again
    assert index.ntotal == N - 90
    _, found = index.search(vectors[:10], 1, params)
    if kind != "ivf_pq":
        assert found[:, 0].tolist() == gone[:10].tolist()

    path = tmp_path / "index.faiss"
    index.save(path)
    header = VectorIndex.read_header(path)
    assert header["index_type"] == kind and header["params"] == index.spec.params()
    loaded = VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    assert loaded.spec == index.spec and loaded.build_id == index.build_id
    assert np.array_equal(loaded.ids(), index.ids())
    np.testing.assert_array_equal(
        loaded.search(vectors[:30], 10, params)[1], index.search(vectors[:30], 10, params)[1]
    )
    np.testing.assert_array_equal(
        loaded.reconstruct_batch(ids[200:210]), index.reconstruct_batch(ids[200:210])
    )


def test_hnsw_removal_leaves_tombstones_that_searches_skip(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    index = built("hnsw", vectors, ids)
    index.remove(ids[:5])
    assert index.tombstones == 5 and index.ntotal == N - 5
    _, found = index.search(vectors[:5], 50)
    assert (found >= 0).all() and not np.isin(found, ids[:5]).any()
    assert index.memory_bytes() > 0


def test_search_parameters_change_what_an_ivf_looks_at(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    index = built("ivf_flat", vectors, ids)
    assert index.spec.nlist > 4
    _, narrow = index.search(vectors[:100], 10, SearchParams(nprobe=1))
    _, wide = index.search(vectors[:100], 10, SearchParams(nprobe=index.spec.nlist))
    exact = VectorIndex(DIM, FINGERPRINT)
    exact.add(ids, vectors)
    _, truth = exact.search(vectors[:100], 10)
    assert np.array_equal(wide, truth)
    assert not np.array_equal(narrow, truth)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_search_parameters_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="nprobe must be an integer >= 1"):
        SearchParams(nprobe=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ef_search must be an integer >= 1"):
        SearchParams(ef_search=bad)  # type: ignore[arg-type]


def test_an_ivf_must_be_trained_before_adding(rng: np.random.Generator) -> None:
    index = VectorIndex(DIM, FINGERPRINT, spec_for("ivf_flat", N, DIM))
    assert not index.is_trained
    with pytest.raises(VectorIndexError, match="must be trained"):
        index.add(np.arange(3), unit_vectors(rng, 3))
    with pytest.raises(ValueError, match="needs at least nlist"):
        index.train(unit_vectors(rng, 2))


def test_a_header_that_disagrees_with_the_payload_is_a_file_error(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A Flat payload under a header that says ivf_flat must not reach the IVF code paths."""
    ids, vectors = data
    path = tmp_path / "index.faiss"
    flat = VectorIndex(DIM, FINGERPRINT)
    flat.add(ids, vectors)
    flat.save(path)
    raw = path.read_bytes()
    (length,) = struct.unpack("<I", raw[8:12])
    header = json.loads(raw[12 : 12 + length])
    header.update(index_type="ivf_flat", params={"nlist": 4, "nprobe": 2})
    new = json.dumps(header).encode()
    path.write_bytes(store.MAGIC + struct.pack("<I", len(new)) + new + raw[12 + length :])
    with pytest.raises(IndexFileError, match="not an IVF index as its header says"):
        VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    header.update(index_type="nonsense")
    new = json.dumps(header).encode()
    path.write_bytes(store.MAGIC + struct.pack("<I", len(new)) + new + raw[12 + length :])
    with pytest.raises(IndexFileError, match="index type or parameters"):
        VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)


def test_slots_an_ivf_cannot_fill_are_id_minus_one_with_score_minus_infinity(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    ids, vectors = data
    index = built("ivf_flat", vectors, ids)
    scores, found = index.search(vectors[:20], N // 2, SearchParams(nprobe=1))  # one cell: too few vectors
    padded = found < 0
    assert padded.any() and (~padded).any()
    assert np.all(scores[padded] == -np.inf) and np.all(np.isfinite(scores[~padded]))


def test_range_search_keeps_a_score_equal_to_the_threshold_and_answers_best_first(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    ids, vectors = data
    index = VectorIndex(DIM, FINGERPRINT)
    index.add(ids, vectors)
    scores, found = index.search(vectors[:5], 8)
    for row in range(5):
        threshold = float(scores[row, 7])  # exactly the 8th best score
        [(range_scores, range_ids)] = index.range_search(vectors[row], threshold)
        assert found[row, 7] in set(range_ids.tolist()), "a score equal to the threshold must be kept"
        assert set(found[row].tolist()) <= set(range_ids.tolist())
        assert np.all(range_scores[:-1] >= range_scores[1:]), "range results must come best first"
        assert range_scores[0] == pytest.approx(1.0, abs=1e-5) and range_ids[0] == ids[row]

"""The automatic choice of index type and the parameters each type gets for a collection size."""

from __future__ import annotations

import math

import pytest

from index import IndexSpec
from index.factory import (
    DEFAULT_NPROBE,
    MIN_TRAIN_VECTORS,
    choose_type,
    estimated_bytes,
    flat_max_vectors,
    nlist_for,
    pq_m_for,
    resolve,
    spec_for,
    train_sample_size,
)

DIM = 1280  # the default encoder's


def test_small_collections_stay_exact() -> None:
    assert choose_type(0, DIM, 8192) == "flat"
    assert choose_type(flat_max_vectors(DIM), DIM, 8192) == "flat"
    assert choose_type(flat_max_vectors(DIM) + 1, DIM, 8192) == "hnsw"


def test_a_short_code_stays_exact_longer() -> None:
    assert flat_max_vectors(128) == 10 * flat_max_vectors(1280)


def test_a_million_default_vectors_get_hnsw_within_the_default_budget_else_an_ivf() -> None:
    assert choose_type(1_000_000, DIM, 8192) == "hnsw"
    assert choose_type(1_000_000, DIM, 5500) == "ivf_flat", "no room for the graph's links"
    assert choose_type(1_000_000, DIM, 1024) == "ivf_pq"
    flat_bytes = estimated_bytes(spec_for("ivf_flat", 1_000_000, DIM), 1_000_000, DIM)
    pq_bytes = estimated_bytes(spec_for("ivf_pq", 1_000_000, DIM), 1_000_000, DIM)
    assert 5e9 < flat_bytes < 6e9 and pq_bytes < flat_bytes / 20


def test_ivf_parameters_follow_the_size() -> None:
    spec = spec_for("ivf_flat", 1_000_000, DIM)
    assert 4 * math.sqrt(1_000_000) <= spec.nlist <= 16 * math.sqrt(1_000_000)
    assert spec.nprobe == DEFAULT_NPROBE
    assert spec.description() == f"IVF{spec.nlist}_HNSW32,Flat"
    assert nlist_for(1000) == 1000 // 39, "never fewer than 39 training points per cell"
    pq = spec_for("ivf_pq", 1_000_000, DIM)
    assert pq.pq_m == 160 and DIM % pq.pq_m == 0 and pq.description().endswith("PQ160x8")
    assert pq_m_for(32) == 4
    assert train_sample_size(spec) >= 39 * spec.nlist


def test_explicit_types_and_too_small_collections() -> None:
    assert resolve("hnsw", 10, DIM, 8192).type == "hnsw"
    assert resolve("ivf_pq", MIN_TRAIN_VECTORS - 1, DIM, 8192).type == "flat", "too few vectors to train"
    assert resolve("ivf_pq", MIN_TRAIN_VECTORS, DIM, 8192).type == "ivf_pq"
    assert resolve("auto", 50, DIM, 8192).type == "flat"
    with pytest.raises(ValueError, match="not one of auto, flat"):
        resolve("annoy", 50, DIM, 8192)


def test_spec_validation_and_header_round_trip() -> None:
    spec = spec_for("ivf_pq", 100_000, DIM)
    assert IndexSpec.from_header(spec.type, spec.params()) == spec
    with pytest.raises(ValueError, match="unknown index parameters"):
        IndexSpec.from_header("flat", {"colour": 3})
    with pytest.raises(ValueError, match="nlist >= 1"):
        IndexSpec("ivf_flat")
    with pytest.raises(ValueError, match="hnsw needs"):
        IndexSpec("hnsw", hnsw_m=1)
    assert spec.with_search_defaults(64, 99).nprobe == 64
    assert spec.with_search_defaults(None, 99) == spec, "ef_search does not apply to an IVF"

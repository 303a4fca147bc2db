"""Fixtures for the vector index tests: small random unit vectors, so every test runs in milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from index import VectorIndex
from tests.helpers.vectors import DIM, FINGERPRINT, unit_vectors


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def empty_index() -> VectorIndex:
    return VectorIndex(DIM, FINGERPRINT)


@pytest.fixture
def filled(rng: np.random.Generator) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """200 vectors under large, sparse, shuffled ids: database row ids need not be dense or ordered."""
    index = VectorIndex(DIM, FINGERPRINT)
    ids = (10**12 + np.arange(200, dtype=np.int64) * 7919)[rng.permutation(200)]
    vectors = unit_vectors(rng, 200)
    index.add(ids, vectors)
    return index, ids, vectors

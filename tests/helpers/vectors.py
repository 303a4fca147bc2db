"""Shared constants and data for the index tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import numpy as np

DIM = 32
FINGERPRINT = "test-encoder:gem:v1"


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """L2-normalised like the encoders' output, so each vector's best inner-product match is itself."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

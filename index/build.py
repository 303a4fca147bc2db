"""Building a VectorIndex of a given type from vectors kept elsewhere (the database, a benchmark's array).

One function for `cbir index-build`, the service's rebuild at start-up and bench/ann.py, so what the bench
measures is what the product builds: train on a uniform sample, then add in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from index.factory import IndexSpec
from index.store import VectorIndex

__all__ = ["build_index"]


def build_index(
    dim: int,
    fingerprint: str,
    spec: IndexSpec,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    train_sample: np.ndarray | None = None,
    on_added: Callable[[int], None] | None = None,
) -> VectorIndex:
    """A new index of ``spec`` holding every (ids, vectors) batch; ``on_added(n)`` after each batch.

    ``train_sample`` is required when the spec needs training (IVF): a uniform sample of the same vectors
    (``index.factory.train_sample_size`` says how many), so that the cells fit the collection.
    """
    index = VectorIndex(dim, fingerprint, spec)
    if spec.needs_training:
        if train_sample is None:
            raise ValueError(f"{spec.describe()} must be trained: pass a sample of the vectors to index")
        index.train(train_sample)
    for ids, vectors in batches:
        index.add(ids, vectors)
        if on_added is not None:
            on_added(len(ids))
    return index

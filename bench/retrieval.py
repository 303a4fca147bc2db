"""Query-against-database retrieval figures (the MNIST and CIFAR-10 protocols), searched with FAISS.

`cbir evaluate` queries every image against all the others; the shared protocols instead hold out fixed
queries, so the database never contains a query. Ranking is by inner product of L2-normalised rows (cosine),
exhaustive, so the figures depend on the descriptors only.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from app.learn.evaluation import average_precisions


@dataclass(frozen=True)
class Figures:
    mean_ap: float  # over all relevant items of the database
    precision: float  # P@k
    k: int


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as float32 the way FAISS wants them."""
    out = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(out)
    return out


def query_figures(
    queries: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    database_labels: np.ndarray,
    *,
    k: int,
    chunk: int = 250,
) -> Figures:
    """mAP over the whole ranking of the database and P@k, for L2-normalised float32 rows."""
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries have dim {queries.shape[1]} but the database has {database.shape[1]}")
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    relevant = np.array([(database_labels == label).sum() for label in query_labels])
    aps: list[np.ndarray] = []
    hits_at_k = 0
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        _, ids = index.search(np.ascontiguousarray(queries[start:stop], dtype=np.float32), len(database))
        ranked = database_labels[ids]
        hits = ranked == query_labels[start:stop, None]
        aps.append(average_precisions(ranked, query_labels[start:stop], relevant[start:stop]))
        hits_at_k += int(hits[:, :k].sum())
    return Figures(float(np.concatenate(aps).mean()), hits_at_k / (len(queries) * k), k)

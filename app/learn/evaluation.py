"""Retrieval quality of the configured encoder on a folder-per-class collection.

Embeds and ranks with exactly the code path the service uses (same decoding, encoder, search and re-ranking),
so the figures describe what a user of the service would get. Protocol: every image queries all the others;
relevant = same folder; AP is over all relevant images (mAP), P@k over the first k answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.files.decoding import Skipped, list_files
from app.learn.embedding import embed_vectors
from app.search.reranking import NeighbourCache, RerankOptions, rank
from index import VectorIndex
from models import ImageEncoder

PRECISION_AT = (1, 5, 10)


@dataclass
class EvalReport:
    images: int
    classes: int
    mean_ap: float
    precision: dict[int, float]
    seconds: float
    skipped: list[Skipped] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "images": self.images,
            "classes": self.classes,
            "mAP": round(self.mean_ap, 4),
        }
        out.update({f"P@{k}": round(v, 4) for k, v in self.precision.items()})
        out["seconds"] = round(self.seconds, 1)
        out["img_s"] = round(self.images / self.seconds, 1) if self.seconds else 0.0
        return out


def average_precisions(
    ranked_labels: np.ndarray, query_labels: np.ndarray, relevant: np.ndarray
) -> np.ndarray:
    """AP per query from (Q, N) ranked labels, the query labels and the number of relevant items per query."""
    hits = ranked_labels == query_labels[:, None]
    cumulative = np.cumsum(hits, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    precision_at_hits = np.where(hits, cumulative / ranks, 0.0)
    return precision_at_hits.sum(axis=1) / np.maximum(relevant, 1)


def retrieval_metrics(
    vectors: np.ndarray,
    labels: np.ndarray,
    fingerprint: str,
    rerank: RerankOptions | None = None,
    chunk: int = 256,
) -> tuple[float, dict[int, float]]:
    """mAP and P@k of every item queried against all the others (queries in chunks to bound memory).

    Ranked by the service's own ranking function (`rank`, re-ranking included), with each query left out of
    the database it is measured against, so the figures are what a client of the service would get.
    """
    n = len(vectors)
    index = VectorIndex(vectors.shape[1], fingerprint)
    index.add(np.arange(n, dtype=np.int64), vectors)
    options = rerank if rerank is not None else RerankOptions.off()
    cache = NeighbourCache()
    relevant_all = np.bincount(labels)[labels] - 1
    aps: list[np.ndarray] = []
    hits_at = {k: 0.0 for k in PRECISION_AT if k < n}
    for start in range(0, n, chunk):
        query_ids = np.arange(start, min(start + chunk, n))
        _, ids = rank(index, vectors[query_ids], n - 1, options, cache=cache, exclude=query_ids.tolist())
        if (ids < 0).any():
            raise RuntimeError("the ranking returned fewer results than the database holds")
        ranked_labels = labels[ids]
        query_labels = labels[query_ids]
        aps.append(average_precisions(ranked_labels, query_labels, relevant_all[query_ids]))
        hits = ranked_labels == query_labels[:, None]
        for k in hits_at:
            hits_at[k] += float(hits[:, :k].sum())
    precision = {k: total / (n * k) for k, total in hits_at.items()}
    return float(np.concatenate(aps).mean()), precision


def evaluate_folder(
    encoder: ImageEncoder,
    root: Path,
    *,
    workers: int,
    max_pixels: int,
    on_progress: Callable[[int, int], None] | None = None,
    rerank: RerankOptions | None = None,
) -> EvalReport:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(
            f"{root} must hold one sub-folder per class (found {len(classes)}); see `cbir evaluate --help`"
        )
    paths: list[Path] = []
    path_labels: list[int] = []
    for label, folder in enumerate(classes):
        files = list_files(folder)
        paths.extend(files)
        path_labels.extend([label] * len(files))
    started = time.perf_counter()
    all_vectors, positions, reading = embed_vectors(
        encoder, paths, root, max_pixels=max_pixels, workers=workers, on_progress=on_progress
    )
    labels = [path_labels[position] for position in positions]
    seconds = time.perf_counter() - started
    mean_ap, precision = retrieval_metrics(all_vectors, np.array(labels), encoder.fingerprint, rerank)
    return EvalReport(len(all_vectors), len(classes), mean_ap, precision, seconds, reading.skipped)

"""`cbir evaluate DIR --ground-truth FILE`: instance retrieval, where a file says which images match a query.

Class folders say "same kind of picture"; instance benchmarks (Oxford/Paris buildings, a shop's photos of
one product) list, per query, the file names that show the same thing. Every image under DIR is in the
database; each listed query is ranked against all the others by the service's own ranking (re-ranking and,
for a query with a box, the region descriptor included, exactly as `POST /search` would answer), and scored
by AP over its relevant images, P@k and R@k (the share of its relevant images in the first k).

The file is JSON: {"query.jpg": ["match1.jpg", "match2.jpg"], ...}; a query's value may instead be
{"relevant": [...], "box": [x0, y0, x1, y1]} to search for a region of it. Names are paths relative to DIR
(a bare file name is enough when it is unique under DIR).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.files.decoding import Skipped, list_files
from app.learn.embedding import embed_vectors
from app.search.queries import scaled_box
from app.search.reranking import NeighbourCache, RerankOptions, rank
from index import VectorIndex
from models import Encoder, ImageEncoder, decode_image

__all__ = ["AT_K", "GroundTruthReport", "Query", "evaluate_ground_truth", "read_ground_truth"]

AT_K = (1, 5, 10)


@dataclass(frozen=True)
class Query:
    name: str
    relevant: frozenset[str]
    box: tuple[float, float, float, float] | None = None


@dataclass
class GroundTruthReport:
    images: int
    queries: int
    mean_ap: float
    precision: dict[int, float]
    recall: dict[int, float]
    seconds: float
    skipped: list[Skipped] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "images": self.images,
            "queries": self.queries,
            "mAP": round(self.mean_ap, 4),
        }
        out.update({f"P@{k}": round(v, 4) for k, v in self.precision.items()})
        out.update({f"R@{k}": round(v, 4) for k, v in self.recall.items()})
        out["seconds"] = round(self.seconds, 1)
        return out


def read_ground_truth(path: Path) -> list[Query]:
    """Parse and check the file; ValueError says what is wrong and where."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the ground truth {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} must be a JSON object of query name -> relevant names (see --help)")
    queries = []
    for name, value in raw.items():
        box = None
        relevant = value
        if isinstance(value, dict):
            relevant = value.get("relevant")
            if value.get("box") is not None:
                coords = value["box"]
                if not (isinstance(coords, list) and len(coords) == 4):
                    raise ValueError(f"{path}: the box of {name!r} must be [x0, y0, x1, y1]")
                box = (float(coords[0]), float(coords[1]), float(coords[2]), float(coords[3]))
        if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
            raise ValueError(f"{path}: {name!r} needs a non-empty list of relevant file names")
        queries.append(Query(str(name), frozenset(relevant) - {name}, box))
    return queries


def evaluate_ground_truth(
    encoder: ImageEncoder,
    root: Path,
    ground_truth: Path,
    *,
    workers: int,
    max_pixels: int,
    rerank: RerankOptions,
    on_progress: Callable[[int, int], None] | None = None,
) -> GroundTruthReport:
    queries = read_ground_truth(ground_truth)
    paths = list_files(root)
    names = [p.relative_to(root).as_posix() for p in paths]
    position = _resolver(names, ground_truth)
    started = time.perf_counter()
    database, kept, reading = embed_vectors(
        encoder, paths, root, max_pixels=max_pixels, workers=workers, on_progress=on_progress
    )
    index = VectorIndex(database.shape[1], encoder.fingerprint)
    index.add(np.asarray(kept, dtype=np.int64), database)
    readable = set(kept)
    row_of = {image: row for row, image in enumerate(kept)}
    cache = NeighbourCache()
    aps, precision, recall = [], {k: 0.0 for k in AT_K}, {k: 0.0 for k in AT_K}
    for query in queries:
        query_id = position(query.name)
        if query_id not in readable:
            raise ValueError(f"the query {query.name!r} could not be read, so it cannot be evaluated")
        relevant = {position(name) for name in query.relevant} & readable
        if not relevant:
            raise ValueError(f"none of the relevant images of {query.name!r} is readable under {root}")
        if query.box is None:
            vector, options = database[row_of[query_id]], rerank
        else:  # as `POST /search` ranks a region query by default: plainly (see Collection.search_image)
            vector, options = _region(encoder, paths[query_id], query.box, max_pixels), RerankOptions.off()
        _, ids = rank(index, vector, len(kept) - 1, options, cache=cache, exclude=[query_id])
        hits = np.isin(ids[0], list(relevant))
        aps.append(float((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits].sum() / len(relevant)))
        for k in AT_K:
            precision[k] += float(hits[:k].mean())
            recall[k] += float(hits[:k].sum()) / len(relevant)
    count = len(queries)
    return GroundTruthReport(
        images=len(kept),
        queries=count,
        mean_ap=float(np.mean(aps)),
        precision={k: v / count for k, v in precision.items()},
        recall={k: v / count for k, v in recall.items()},
        seconds=time.perf_counter() - started,
        skipped=reading.skipped,
    )


def _resolver(names: list[str], origin: Path) -> Callable[[str], int]:
    exact = {name: i for i, name in enumerate(names)}
    by_file: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_file.setdefault(name.rsplit("/", 1)[-1], []).append(i)

    def position(name: str) -> int:
        if name in exact:
            return exact[name]
        found = by_file.get(name, [])
        if len(found) == 1:
            return found[0]
        what = "is not under the folder" if not found else "names several files: give its path in the folder"
        raise ValueError(f"{origin}: {name!r} {what}")

    return position


def _region(
    encoder: ImageEncoder, path: Path, box: tuple[float, float, float, float], max_pixels: int
) -> np.ndarray:
    if not isinstance(encoder, Encoder):
        raise ValueError(f"the encoder {encoder.fingerprint} cannot describe a region: remove the boxes")
    decoded = decode_image(path.read_bytes(), max_side=encoder.max_side, max_pixels=max_pixels)
    return encoder.embed_region(decoded.image, scaled_box(box, decoded))

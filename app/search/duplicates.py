"""Near-duplicates: the images that geometric verification says are the same picture as a stored one.

The same decision as the `match` field of search results (app/search/verification.py): among an image's
nearest stored neighbours by plain cosine (never re-ranked: query expansion and DBA pull in neighbours by
design, which is right for "similar" and wrong for "the same"), those at least `threshold` similar whose
local features match under one geometric transform with P(same) >= 0.5. The cosine threshold only bounds
the candidates; verification decides (README, "Near-duplicates").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sqlalchemy import select

from app.collection.facade import Collection, Hit
from app.db.tables import Image
from app.errors import NotFoundError
from app.search.verification import QueryFeatures, probability, verify
from models.local_features import LocalFeatures

__all__ = ["duplicate_groups", "duplicates_of"]


_CHUNK = 1024


def duplicates_of(collection: Collection, image_id: int, threshold: float) -> list[Hit]:
    """The other images that are the same picture as image_id, most likely first."""
    collection.catch_up()
    collection.get(image_id)  # NotFoundError for an unknown id
    try:
        vector = collection.index.reconstruct(image_id)
    except KeyError:
        raise NotFoundError(f"image {image_id} is not in the index yet; retry in a moment") from None
    found = _verified(collection, image_id, vector, threshold)
    rows = _rows(collection, [i for i, _, _ in found])
    return [
        Hit(rows[i], score, count, float(probability(count, score))) for i, score, count in found if i in rows
    ]


def _verified(
    collection: Collection, image_id: int, vector: np.ndarray, threshold: float
) -> list[tuple[int, float, int]]:
    """(id, cosine, inliers) of the neighbours verified as the same picture, most inliers first."""
    depth = max(1, collection.verification.candidates) + 1
    scores, ids = collection.index.search(vector[None, :].astype(np.float32), depth)
    keep = (ids[0] >= 0) & (ids[0] != image_id) & (scores[0] >= threshold)
    candidates, cosines = ids[0][keep], scores[0][keep]
    if not len(candidates):
        return []
    [picture] = collection.local_features([image_id])
    if picture is None:
        picture = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    own = collection.picture_of(image_id)  # for the mirrored features, only if needed
    query = QueryFeatures(image=own, plain=picture) if own is not None else QueryFeatures(plain=picture)
    counts = verify(query, collection.local_features(candidates.tolist()))
    same = probability(counts, cosines) >= 0.5
    out = [
        (int(i), float(s), int(n))
        for i, s, n, ok in zip(candidates, cosines, counts, same, strict=True)
        if ok
    ]
    return sorted(out, key=lambda item: (-item[2], -item[1]))


def duplicate_groups(collection: Collection, threshold: float) -> list[list[Image]]:
    """The collection's groups of near-duplicates (connected components of the "same picture" graph).

    Groups of two or more, the largest first, each in id order. Every image is verified against its
    nearest neighbours, so the cost is one local-feature extraction per image and a few matches each.
    """
    collection.catch_up()
    ids = collection.index.ids()
    parent = {int(i): int(i) for i in ids}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        vectors = collection.index.reconstruct_batch(chunk)
        for image_id, vector in zip(chunk.tolist(), vectors, strict=True):
            for other, _, _ in _verified(collection, int(image_id), vector, threshold):
                if other not in parent:
                    continue
                a, b = root(int(image_id)), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for image_id in parent:
        members.setdefault(root(image_id), []).append(image_id)
    groups = [sorted(group) for group in members.values() if len(group) > 1]
    rows = _rows(collection, (i for group in groups for i in group))
    out = [[rows[i] for i in group if i in rows] for group in groups]
    out = [group for group in out if len(group) > 1]
    out.sort(key=lambda group: (-len(group), group[0].id))
    return out


def _rows(collection: Collection, ids: Iterable[int]) -> dict[int, Image]:
    wanted = sorted({int(i) for i in ids})
    rows: dict[int, Image] = {}
    with collection.sessions() as session:
        for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
            part = wanted[start : start + 900]
            rows.update((row.id, row) for row in session.scalars(select(Image).where(Image.id.in_(part))))
    return rows

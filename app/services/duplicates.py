"""Near-duplicates: images whose stored descriptors are at least `threshold` similar (cosine).

Near-duplicates are the same photo re-saved, resized, cropped a little, brightened or framed; their
descriptors stay far closer to each other than those of two different photos, even of the same scene. The
comparison is on the stored vectors, never re-ranked: query expansion and DBA pull in neighbours by design,
which is right for "similar" and wrong for "the same". The default threshold (setting duplicate_threshold)
is measured by bench/duplicates.py for the default encoder (README, "Near-duplicates"); another encoder
needs its own measurement.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from app.db.tables import Image
from app.errors import NotFoundError
from app.services.collection import Collection, Hit

__all__ = ["duplicate_groups", "duplicates_of"]

_CHUNK = 1024


def duplicates_of(collection: Collection, image_id: int, threshold: float) -> list[Hit]:
    """The other images at least `threshold` similar to image_id, most similar first."""
    collection.catch_up()
    collection.get(image_id)  # NotFoundError for an unknown id
    try:
        vector = collection.index.reconstruct(image_id)
    except KeyError:
        raise NotFoundError(f"image {image_id} is not in the index yet; retry in a moment") from None
    [(scores, ids)] = collection.index.range_search(vector, threshold)
    keep = ids != image_id
    rows = _rows(collection, ids[keep].tolist())
    return [
        Hit(rows[int(i)], float(s)) for s, i in zip(scores[keep], ids[keep], strict=True) if int(i) in rows
    ]


def duplicate_groups(collection: Collection, threshold: float) -> list[list[Image]]:
    """The collection's groups of near-duplicates (connected components of the >= threshold graph).

    Groups of two or more, the largest first, each in id order. Every stored vector is range-searched
    against the whole index, so the cost grows with the square of the collection's size.
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
        found = collection.index.range_search(collection.index.reconstruct_batch(chunk), threshold)
        for image_id, (_, neighbours) in zip(chunk.tolist(), found, strict=True):
            for other in neighbours.tolist():
                a, b = root(image_id), root(int(other))
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

"""The collection's inserts: one image's row (its vector and local features included) and its file, in one
transaction.

Files are staged under pending names before the commit and published after it (app/files/storage.py), so a
crash leaves either a committed row whose file is published at the next open, or a pending file no row
owns, which that open removes; a failed transaction discards what it staged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.collection import stores
from app.collection.features import store_missing
from app.collection.results import Added
from app.collection.versions import read_active
from app.db import vectors as vectors_codec
from app.db.changes import ADD, record_change
from app.db.tables import Image
from app.errors import ServiceBusyError
from app.files.decoding import Storable
from app.files.storage import FileStore
from index import VectorIndex

__all__ = [
    "insert_many",
    "insert_rows",
    "refuse_if_swapped",
    "refuse_if_switched",
    "require_store",
    "row_values",
    "staging",
]


def row_values(item: Storable, vector: np.ndarray, fingerprint: str) -> dict[str, Any]:
    return {
        "sha256": item.sha256,
        "original_name": item.original_name[:1024],
        "source_path": item.source_path,
        "width": item.width,
        "height": item.height,
        "size_bytes": len(item.data),
        "format": item.format,
        "meta": item.meta,
        "encoder": fingerprint,
        "vector": vectors_codec.encode(vector),
    }


@contextmanager
def staging(files: FileStore, *, batch: bool = False) -> Iterator[list[Path]]:
    """The list the block (a transaction) stages files into: discarded if it fails, published once it has
    committed; ``batch``: with one os.sync() for all (a bulk job's), else an fsync of each one's folder."""
    staged: list[Path] = []
    try:
        yield staged
    except BaseException:
        for path in staged:
            files.discard(path)
        raise
    if batch:
        files.publish_many(staged)
    else:
        for path in staged:
            files.publish(path)


def insert_rows(
    session: Session,
    files: FileStore,
    items: Sequence[Storable],
    vectors: np.ndarray,
    fingerprint: str,
    *,
    copy_files: bool,
    staged: list[Path],
) -> list[Added]:
    """Rows (with vectors) for the new items as ORM objects, one Added per item; their files staged."""
    results: list[Added] = []
    digests = [item.sha256 for item in items]
    existing = {row.sha256: row for row in session.scalars(select(Image).where(Image.sha256.in_(digests)))}
    for item, vector in zip(items, vectors, strict=True):
        if item.sha256 in existing:
            results.append(Added(existing[item.sha256], duplicate=True))
            continue
        if copy_files or item.source_path is None:
            path = files.stage(item.sha256, item.format, item.data)
            if path is not None:
                staged.append(path)
        row = Image(**row_values(item, vector, fingerprint))
        session.add(row)
        existing[item.sha256] = row
        results.append(Added(row, duplicate=False))
    session.flush()
    pairs = zip(results, items, strict=True)
    fresh = [(added.image.id, item) for added, item in pairs if not added.duplicate]
    _insert_features(session, fresh)
    record_change(session, ADD, [image_id for image_id, _ in fresh])
    return results


def insert_many(
    session: Session,
    files: FileStore,
    pool: Executor,
    items: Sequence[Storable],
    vectors: np.ndarray,
    fingerprint: str,
    *,
    copy_files: bool,
    staged: list[Path],
) -> tuple[list[int], list[int]]:
    """The bulk job's insert: one executemany INSERT and a thread pool staging the files; returns (the new
    rows' ids, the positions in ``items`` they came from)."""
    taken = set(session.scalars(select(Image.sha256).where(Image.sha256.in_([i.sha256 for i in items]))))
    fresh: list[int] = []
    for position, item in enumerate(items):
        if item.sha256 not in taken:
            taken.add(item.sha256)
            fresh.append(position)
    to_copy = [
        (items[p].sha256, items[p].format, items[p].data)
        for p in fresh
        if copy_files or items[p].source_path is None
    ]
    staged.extend(files.stage_many(to_copy, pool))
    rows = [row_values(items[p], vectors[p], fingerprint) for p in fresh]
    if not rows:
        return [], fresh
    # executemany, then the ids by hash: far cheaper than RETURNING row by row
    session.execute(insert(Image), rows)
    new = [row["sha256"] for row in rows]
    found = session.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(new)))
    id_of = {digest: image_id for digest, image_id in found}
    ids = [id_of[digest] for digest in new]
    _insert_features(session, list(zip(ids, (items[p] for p in fresh), strict=True)))
    record_change(session, ADD, ids)
    return ids, fresh


def _insert_features(session: Session, rows: Sequence[tuple[int, Storable]]) -> None:
    """The new rows' local features, where the reader extracted them (app/collection/features.py)."""
    store_missing(
        session,
        [(image_id, item.local_features) for image_id, item in rows if item.local_features is not None],
    )


def refuse_if_swapped(made_by: str | None, fingerprint: str) -> None:
    """Vectors embedded before this process swapped in a new encoder must not be stored under it.

    Called under the collection's write lock, which the swap (app/collection/swaps.py) takes too.
    """
    if made_by is not None and made_by != fingerprint:
        raise ServiceBusyError(
            f"the collection switched to encoder '{fingerprint}' while these images were "
            f"embedded by '{made_by}' (`cbir reindex`): retry, and they are embedded by the new one"
        )


def require_store(index: VectorIndex) -> None:
    """A shared store must answer before a write commits: if Milvus is down, the write is refused (503,
    StoreUnavailableError) instead of committing rows it cannot index. Should it fail between this check
    and the store write, the rows are committed and every process re-adds them from the change feed."""
    if stores.is_shared(index):
        index.ntotal  # noqa: B018  (one round trip; raises StoreUnavailableError)


def refuse_if_switched(session: Session, fingerprint: str, advice: str) -> None:
    """Writes under an encoder that `cbir reindex` has just replaced would mix vector spaces."""
    active = read_active(session)
    if active is not None and active.fingerprint != fingerprint:
        raise ServiceBusyError(
            f"`cbir reindex` switched the collection to encoder '{active.fingerprint}': {advice}"
        )

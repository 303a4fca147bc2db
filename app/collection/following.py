"""Following the change feed: a process's vector index converges on the database before it answers.

Each process that holds vectors remembers the seq of the last feed entry it applied. Before each search it
reads ``max(seq)`` (one primary-key lookup); when that moved, it reads the new entries and brings the ids
they name to the database's *current* state: an id whose row exists with this encoder's vector is added if
the index lacks it, an id without a row is removed. Replaying the net state rather than each entry makes
the replay idempotent and order-proof: an add whose row was deleted meanwhile is simply not added, and a
process's own writes (already applied) change nothing when they come round in the feed. Metadata updates
need no vector work (hits are read from the rows), and encoder switches and index rebuilds are followed by
the collection's own switch and pick-up paths; their entries only move the seq on.

This replaces "add the rows whose id is above the largest one seen", which missed every deletion and, with
ids reused after a delete, took a new image for one it already held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import vectors as vectors_codec
from app.db.changes import ADD, DELETE, changes_after, last_seq
from app.db.tables import Image

_CHUNK = 4096


class Followable(Protocol):
    """What following needs of a vector store."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray | Sequence[int]) -> int: ...
    def __contains__(self, image_id: object) -> bool: ...


def latest(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return last_seq(session)


def follow(
    index: Followable, sessions: sessionmaker[Session], seen: int, fingerprint: str, dim: int
) -> tuple[int, int, int]:
    """Apply the feed after ``seen`` to ``index``; returns (new seen, added, removed). The caller serialises
    writes to ``index`` (the collection's write lock)."""
    added = removed = 0
    with sessions() as session:
        while True:
            entries = changes_after(session, seen)
            if not entries:
                return seen, added, removed
            touched = {int(e.image_id) for e in entries if e.image_id is not None and e.op in (ADD, DELETE)}
            a, r = sync_ids(index, session, touched, fingerprint, dim)
            added, removed, seen = added + a, removed + r, int(entries[-1].seq)


def sync_ids(
    index: Followable, session: Session, ids: Iterable[int], fingerprint: str, dim: int
) -> tuple[int, int]:
    """Bring ``ids`` in ``index`` to the database's current state; returns (added, removed)."""
    wanted = sorted(set(ids))
    added = removed = 0
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = session.execute(select(Image.id, Image.encoder, Image.vector).where(Image.id.in_(chunk))).all()
        # A row of another encoder stays: `cbir reindex` switched the collection, and until this process
        # swaps the new encoder in (with an index built from the rows) its old index answers on.
        exists = {int(row.id) for row in rows}
        present = {int(row.id): row.vector for row in rows if row.encoder == fingerprint}
        gone = [i for i in chunk if i not in exists and i in index]
        if gone:
            removed += index.remove(np.array(gone, dtype=np.int64))
        new = [i for i in present if i not in index]
        if new:
            index.add(
                np.array(new, dtype=np.int64), vectors_codec.decode_many([present[i] for i in new], dim)
            )
            added += len(new)
    return added, removed

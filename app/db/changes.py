"""The change feed: every change to the collection, appended in the transaction that makes it.

Any write path calls ``record_change(session, op, image_ids)`` inside its own transaction (never after it), so
the feed holds an entry exactly when the change committed. Processes that hold vectors follow it
(app/collection/following.py): they compare ``last_seq`` with the last entry they applied before each search —
one primary-key lookup — and replay only what is new.

Order: on SQLite a write transaction holds the database's one write lock, so AUTOINCREMENT seqs are in commit
order. On PostgreSQL a sequence hands out numbers at insert time, not at commit, so a follower could read seq
6 before seq 5 commits and skip 5 for ever; every writer therefore takes one transaction-scoped advisory lock
before it appends, which makes appends (and so seqs) follow commit order. Only the feed's append is
serialised, for the short rest of the writer's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Row, func, insert, select, text
from sqlalchemy.orm import Session

from app.db.tables import Change

ADD = "add"
DELETE = "delete"
UPDATE = "update"  # metadata only: a vector changes only through an encoder switch
ENCODER_SWITCH = "encoder_switch"
INDEX_REBUILD = "index_rebuild"
OPS = (ADD, DELETE, UPDATE, ENCODER_SWITCH, INDEX_REBUILD)

_FEED_LOCK = 0x63626972  # "cbir": the advisory lock key that orders appends on PostgreSQL

__all__ = [
    "ADD",
    "DELETE",
    "ENCODER_SWITCH",
    "INDEX_REBUILD",
    "OPS",
    "UPDATE",
    "changes_after",
    "last_seq",
    "record_change",
]


def record_change(session: Session, op: str, image_ids: Iterable[int] | None = None) -> None:
    """Append ``op`` for each of ``image_ids`` (one entry without an id when None) in the caller's
    transaction. The call to make from any new write path (PATCH, bulk delete, ...)."""
    if op not in OPS:
        raise ValueError(f"unknown change {op!r}: one of {', '.join(OPS)}")
    ids: list[int | None] = [None] if image_ids is None else [int(i) for i in image_ids]
    if not ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK})
    now = datetime.now(UTC)
    session.execute(insert(Change), [{"op": op, "image_id": i, "at": now} for i in ids])


def last_seq(session: Session) -> int:
    """The newest entry's seq (0 for an empty feed): what a follower compares before each search."""
    return int(session.scalar(select(func.max(Change.seq))) or 0)


def changes_after(session: Session, seq: int, limit: int = 50_000) -> Sequence[Row[int, str, int | None]]:
    """Entries after ``seq``, oldest first, at most ``limit``: (seq, op, image_id)."""
    query = select(Change.seq, Change.op, Change.image_id).where(Change.seq > seq)
    return session.execute(query.order_by(Change.seq).limit(limit)).all()

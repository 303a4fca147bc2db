"""What opening a collection checks and mends before it serves: the schema, the encoder, the index's ids.

The database is the source of truth. Opening refuses a database that needs migrations (when told not to
run them) and an encoder other than the collection's, then makes the index hold exactly the rows' ids:
vectors a crash kept from the index are replayed from the rows, ids whose rows are gone are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.collection.versions import encoder_spec, ensure_active, read_active
from app.config import Settings
from app.db import migrate
from app.db import vectors as vectors_codec
from app.db.changes import last_seq
from app.db.tables import Image
from app.errors import CollectionMismatchError
from app.files.storage import FileStore
from index import VectorIndex
from models import ImageEncoder

__all__ = ["REINDEX_HINT", "check_encoder", "check_schema", "sweep_files", "sync_with_rows"]

log = logging.getLogger("cbir.collection")

REINDEX_HINT = "run `cbir reindex` to re-embed the stored images with the configured encoder"


def check_schema(engine: Engine, db_url: str) -> None:
    """Without an upgrade at open, a database behind the code's migrations is refused."""
    missing = migrate.pending(engine)
    if missing:
        raise CollectionMismatchError(
            f"the database at {db_url} needs migrations {missing}: run `cbir db upgrade`"
        )


def check_encoder(engine: Engine, settings: Settings, encoder: ImageEncoder) -> None:
    """Record the encoder of a new collection; refuse another than the one recorded (`cbir reindex`
    switches, app/jobs/reindex.py)."""
    with Session(engine) as session:
        recorded = read_active(session)
    if recorded is None:  # a new collection, or one from before encoders were recorded
        _check_rows_encoder(engine, encoder.fingerprint)
    active = recorded or ensure_active(engine, encoder.fingerprint, encoder_spec(settings))
    if active.fingerprint != encoder.fingerprint:
        raise CollectionMismatchError(
            f"the collection uses encoder '{active.fingerprint}' ({active.describe()}); the service is "
            f"configured with '{encoder.fingerprint}': {REINDEX_HINT}, or configure the collection's one"
        )


def sync_with_rows(
    index: VectorIndex, sessions: sessionmaker[Session], fingerprint: str, dim: int
) -> tuple[int, int, int]:
    """Replay into ``index`` the rows of this encoder it lacks, drop the ids the database no longer has.

    The caller holds the collection's write lock, so no ingest can commit in between. Returns (the feed's
    seq read first: whatever commits after it is replayed from the feed, replayed, dropped).
    """
    current = Image.encoder == fingerprint
    with sessions() as session:
        seq = last_seq(session)
        db_ids = np.fromiter(session.scalars(select(Image.id).where(current)), dtype=np.int64)
        index_ids = index.ids()
        missing = np.setdiff1d(db_ids, index_ids)
        stray = np.setdiff1d(index_ids, db_ids)
        for start in range(0, len(missing), 4096):
            chunk = [int(i) for i in missing[start : start + 4096]]
            rows = session.execute(select(Image.id, Image.vector).where(Image.id.in_(chunk))).all()
            if rows:
                ids = np.array([row.id for row in rows], dtype=np.int64)
                index.add(ids, vectors_codec.decode_many([row.vector for row in rows], dim))
    if len(stray):
        index.remove(stray)
    return seq, len(missing), len(stray)


def sweep_files(
    files: FileStore, known: Callable[[str], bool], committed: Callable[[str], bool]
) -> tuple[int, int]:
    """Publish or remove what a crash left in the file store; returns (published, removed)."""
    published, removed = files.sweep(known, committed)
    if published or removed:
        log.warning(
            "file store after a crash: published %d files whose rows had committed, removed %d that no "
            "row owns: %s",
            len(published),
            len(removed),
            [p.name for p in (published + removed)[:5]],
        )
    return len(published), len(removed)


def _check_rows_encoder(engine: Engine, fingerprint: str) -> None:
    with Session(engine) as session:
        others = session.execute(
            select(Image.encoder, func.count()).where(Image.encoder != fingerprint).group_by(Image.encoder)
        ).all()
    if others:
        found = ", ".join(f"{count} by '{enc}'" for enc, count in others)
        raise CollectionMismatchError(
            f"the collection holds images embedded by another encoder ({found}); the service is configured "
            f"with '{fingerprint}': {REINDEX_HINT}, or configure the encoder the collection was built with"
        )

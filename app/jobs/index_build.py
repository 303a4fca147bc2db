"""Building the vector index from the vectors the database holds: `cbir index-build`, and every rebuild.

Every row keeps its image's vector, so any index type can be (re)built without re-embedding a picture:
count the rows, resolve the type (``auto`` picks by size and memory budget, index/factory.py), train on a
uniform sample of the rows, add them all in id order, save atomically.

A running service picks a rebuilt file up by itself: every index built from scratch gets a new ``build_id``
in its file header; a service that sees another build on disk loads it in the background, replays the rows
committed since the build read them, and swaps it in (app/collection/facade.py), and it never overwrites
a file of another build with its own older index. ``index_file_lock`` makes "check the build on disk, then
replace the file" one step for every writer.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.collection.versions import read_active_fingerprint
from app.config import Settings
from app.db import vectors as vectors_codec
from app.db.changes import INDEX_REBUILD, record_change
from app.db.session import open_database
from app.db.tables import Image
from app.errors import JobError
from index import AUTO, INDEX_TYPES, IndexSpec, VectorIndex, VectorIndexError
from index.build import build_index
from index.factory import resolve, sample_rows, spec_for, train_sample_size

__all__ = [
    "BuildReport",
    "IndexBuildError",
    "build_from_rows",
    "index_file_lock",
    "rebuild_index",
    "spec_for_collection",
]

_BATCH = 4096


class IndexBuildError(JobError):
    """An index that cannot be built from the stored vectors."""


@dataclass
class BuildReport:
    spec: IndexSpec
    count: int
    seconds: float
    path: Path
    previous: str | None  # the replaced file's type, or None when there was none (or it was unreadable)
    store: str | None = None  # a shared store's description (CBIR_VECTOR_STORE=milvus), else the file's

    @property
    def description(self) -> str:
        return self.store or self.spec.describe()


def spec_for_collection(settings: Settings, n: int, dim: int, index_type: str | None = None) -> IndexSpec:
    """The index the settings ask for, for n vectors; with the settings' nprobe / ef_search as defaults."""
    spec = resolve(index_type or settings.index_type, n, dim, settings.index_memory_mb)
    return spec.with_search_defaults(settings.nprobe, settings.ef_search)


@contextmanager
def index_file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the index file (``index.faiss.lock``) for check-then-replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def row_batches(
    sessions: sessionmaker[Session], fingerprint: str, dim: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of the encoder's rows in id order, a batch per short read transaction."""
    last = 0
    while True:
        with sessions() as session:
            rows = session.execute(
                select(Image.id, Image.vector)
                .where(Image.encoder == fingerprint, Image.id > last)
                .order_by(Image.id)
                .limit(_BATCH)
            ).all()
        if not rows:
            return
        last = int(rows[-1].id)
        yield (
            np.array([row.id for row in rows], dtype=np.int64),
            vectors_codec.decode_many([row.vector for row in rows], dim),
        )


def _sample(
    sessions: sessionmaker[Session], fingerprint: str, dim: int, ids: np.ndarray, size: int
) -> np.ndarray:
    chosen = ids[sample_rows(len(ids), size)]
    parts = []
    for start in range(0, len(chosen), _BATCH):
        chunk = [int(i) for i in chosen[start : start + _BATCH]]
        with sessions() as session:
            blobs = session.scalars(select(Image.vector).where(Image.id.in_(chunk))).all()
        parts.append(vectors_codec.decode_many(list(blobs), dim))
    return np.concatenate(parts) if parts else np.empty((0, dim), np.float32)


def build_from_rows(
    sessions: sessionmaker[Session],
    fingerprint: str,
    dim: int,
    spec_of: Callable[[int], IndexSpec],
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> VectorIndex:
    """An index of ``spec_of(row count)`` holding every row of the encoder; ``on_progress(done, total)``."""
    with sessions() as session:
        ids = np.fromiter(
            session.scalars(select(Image.id).where(Image.encoder == fingerprint).order_by(Image.id)),
            dtype=np.int64,
        )
    spec = spec_of(len(ids))
    sample = (
        _sample(sessions, fingerprint, dim, ids, train_sample_size(spec)) if spec.needs_training else None
    )
    done = 0
    if on_progress is not None:
        on_progress(0, len(ids))

    def added(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, max(len(ids), done))

    return build_index(
        dim, fingerprint, spec, row_batches(sessions, fingerprint, dim), train_sample=sample, on_added=added
    )


def rebuild_index(
    settings: Settings,
    *,
    index_type: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """`cbir index-build`: a new index file of the configured (or given) type from the stored vectors.

    Loads no model: the encoder and the dimension come from the database. Rows committed while it runs are
    not in the file, but a running service replays them when it picks the file up, as any process does at
    open (the database is the source of truth).
    """
    started = time.perf_counter()
    if index_type is not None and index_type not in (AUTO, *INDEX_TYPES):
        raise ValueError(f"index type {index_type!r} is not one of {AUTO}, {', '.join(INDEX_TYPES)}")
    db = open_database(settings.db_url, data_dir=settings.data_dir)
    engine, sessions = db.engine, db.sessions
    try:
        fingerprint = read_active_fingerprint(engine)
        with sessions() as session:
            if fingerprint is None:
                fingerprint = session.scalar(select(Image.encoder).limit(1))
            blob = session.scalar(select(Image.vector).where(Image.encoder == fingerprint).limit(1))
            count = session.scalar(
                select(func.count()).select_from(Image).where(Image.encoder == fingerprint)
            )
        if fingerprint is None or blob is None:
            raise IndexBuildError(
                f"the collection at {settings.db_url} holds no vectors: add images (`cbir index DIR`) first"
            )
        dim = len(blob) // 4
        if settings.vector_store == "milvus":
            from app.collection.stores import rebuild_milvus

            store = rebuild_milvus(settings, sessions, dim, fingerprint, on_progress, int(count or 0))
            with sessions.begin() as session:
                record_change(session, INDEX_REBUILD)
            return BuildReport(
                spec_for("hnsw", int(count or 0), dim),
                int(count or 0),
                time.perf_counter() - started,
                Path(settings.milvus_collection),
                None,
                store=f"{store.describe()}, collection {settings.milvus_collection!r}",
            )
        previous = _previous_type(settings.index_path)
        index = build_from_rows(
            sessions,
            fingerprint,
            dim,
            lambda n: spec_for_collection(settings, n, dim, index_type),
            on_progress=on_progress,
        )
        with index_file_lock(settings.index_path):
            index.save(settings.index_path)
        with sessions.begin() as session:
            record_change(session, INDEX_REBUILD)
    finally:
        engine.dispose()
    return BuildReport(
        index.spec, int(count or 0), time.perf_counter() - started, settings.index_path, previous
    )


def _previous_type(path: Path) -> str | None:
    try:
        spec: IndexSpec = VectorIndex.read_header(path)["spec"]
        return spec.describe()
    except VectorIndexError:  # missing or unreadable: it is about to be replaced anyway
        return None

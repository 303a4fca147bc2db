"""The collection: the only place that combines the encoder, the vector index, the database and the files.

Write order is what keeps a crash harmless: file (atomic, content-addressed) → database commit (row and
vector together) → index add → index save. The database is the source of truth; on open, the index is
reconciled with it (missing vectors replayed from the rows, stray ids dropped), so a crash between any two
steps costs at most the work that was not yet committed, and never leaves an image searchable twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL.Image import Image as PILImage
from sqlalchemy import Engine, Row, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import migrate
from app.db.session import make_engine, make_session_factory
from app.db.tables import Image
from app.errors import CollectionMismatchError, NotFoundError
from app.services.decoding import Prepared, decode_or_raise, sha256_of
from app.services.gate import InferenceGate
from app.storage import ORPHAN_MIN_AGE_S, FileStore
from index import IndexFileError, IndexMismatchError, VectorIndex
from models import Encoder

log = logging.getLogger("cbir.collection")

REINDEX_HINT = "run `cbir reindex` to re-embed the stored images with the configured encoder"


@dataclass(frozen=True)
class Hit:
    image: Image
    score: float


@dataclass(frozen=True)
class Added:
    image: Image
    duplicate: bool


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _vectors_from_rows(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


class Collection:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder,
        engine: Engine,
        index: VectorIndex,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_session_factory(engine)
        self.index = index
        self.files = FileStore(settings.images_dir)
        # One writer at a time keeps "commit rows, then add to the index" atomic as seen by other writers;
        # inference is serialised too, so concurrent requests queue instead of oversubscribing the cores.
        self._write_lock = threading.Lock()
        self.gate = InferenceGate(settings.inference_workers, settings.max_queue, settings.queue_timeout_s)
        self._seen_id = 0  # highest row id already in the index (see catch_up)

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, settings: Settings, encoder: Encoder, *, upgrade_schema: bool = True, reindexing: bool = False
    ) -> Collection:
        """Open (creating if needed) the collection in settings.data_dir for this encoder.

        With ``reindexing`` the stored vectors may come from another encoder and the index file is ignored:
        the caller re-embeds the rows, then ``reconcile`` rebuilds the index from them.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        if upgrade_schema:
            migrate.upgrade(engine)
        else:
            missing = migrate.pending(engine)
            if missing:
                raise CollectionMismatchError(
                    f"the database at {settings.db_url} needs migrations {missing}: run `cbir db upgrade`"
                )
        if reindexing:
            return cls(settings, encoder, engine, VectorIndex(encoder.dim, encoder.fingerprint))
        _check_rows_encoder(engine, encoder.fingerprint)
        try:
            index = VectorIndex.open_or_create(
                settings.index_path, dim=encoder.dim, fingerprint=encoder.fingerprint
            )
        except IndexMismatchError as exc:
            raise CollectionMismatchError(str(exc)) from exc
        except IndexFileError as exc:
            log.warning("%s; rebuilding the index from the vectors stored in the database", exc)
            index = VectorIndex(encoder.dim, encoder.fingerprint)
        collection = cls(settings, encoder, engine, index)
        collection.reconcile()
        collection.sweep_orphans()
        return collection

    def close(self) -> None:
        self.engine.dispose()

    def reconcile(self) -> tuple[int, int]:
        """Make the index hold exactly the database's ids of this encoder; returns (replayed, dropped)."""
        current = Image.encoder == self.encoder.fingerprint
        with self._write_lock, self.sessions() as session:
            db_ids = np.fromiter(session.scalars(select(Image.id).where(current)), dtype=np.int64)
            index_ids = self.index.ids()
            missing = np.setdiff1d(db_ids, index_ids)
            stray = np.setdiff1d(index_ids, db_ids)
            for start in range(0, len(missing), 4096):
                chunk = [int(i) for i in missing[start : start + 4096]]
                rows = session.execute(select(Image.id, Image.vector).where(Image.id.in_(chunk))).all()
                self._add_rows(rows)
            self._seen_id = int(db_ids.max()) if len(db_ids) else 0
        if len(stray):
            self.index.remove(stray)
        if len(missing) or len(stray):
            log.warning(
                "index and database disagreed: replayed %d vectors from the database, dropped %d stray ids",
                len(missing),
                len(stray),
            )
            self.save_index()
        return len(missing), len(stray)

    def catch_up(self) -> int:
        """Add rows that another process (`cbir index` beside a running service) committed since last time.

        A primary-key range query, cheap enough to run before every search.
        """
        with self._write_lock, self.sessions() as session:
            rows = session.execute(
                select(Image.id, Image.vector)
                .where(Image.id > self._seen_id, Image.encoder == self.encoder.fingerprint)
                .order_by(Image.id)
            ).all()
            if not rows:
                return 0
            self._seen_id = int(rows[-1].id)
            return self._add_rows([row for row in rows if row.id not in self.index])

    def _add_rows(self, rows: Sequence[Row[int, bytes]]) -> int:
        if rows:
            ids = np.array([row.id for row in rows], dtype=np.int64)
            self.index.add(ids, _vectors_from_rows([row.vector for row in rows], self.encoder.dim))
        return len(rows)

    def sweep_orphans(self, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        removed = self.files.sweep(self.known_sha256().__contains__, min_age_s)
        if removed:
            log.warning("removed %d stored files that no database row owns: %s", len(removed), removed[:5])
        return len(removed)

    # -- embedding ---------------------------------------------------------------------------------------
    def embed_images(self, images: Sequence[PILImage], *, bounded: bool = False) -> np.ndarray:
        """Embed through the inference gate; requests pass ``bounded=True`` and may get ServiceBusyError."""
        with self.gate.slot(bounded=bounded):
            return self.encoder.embed(images)

    def embed_prepared(self, items: Sequence[Prepared], *, bounded: bool = False) -> np.ndarray:
        return self.embed_images([item.decoded.image for item in items], bounded=bounded)

    def prepare_upload(self, data: bytes, name: str, meta: dict[str, Any] | None = None) -> Prepared:
        decoded = decode_or_raise(data, max_side=self.encoder.max_side, max_pixels=self.settings.max_pixels)
        return Prepared(sha256_of(data), data, decoded, original_name=name, meta=meta or {})

    def embed_query(self, data: bytes) -> np.ndarray:
        decoded = decode_or_raise(data, max_side=self.encoder.max_side, max_pixels=self.settings.max_pixels)
        return self.embed_images([decoded.image], bounded=True)[0]

    # -- writing -----------------------------------------------------------------------------------------
    def known_sha256(self) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Image.sha256)))

    def find_by_sha256(self, digest: str) -> Image | None:
        with self.sessions() as session:
            return session.scalars(select(Image).where(Image.sha256 == digest)).first()

    def ingest(
        self, items: Sequence[Prepared], vectors: np.ndarray, *, copy_files: bool = True
    ) -> list[Added]:
        """Store a batch in one transaction, then add it to the index (not saved: see save_index)."""
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
        results: list[Added] = []
        with self._write_lock:
            with self.sessions.begin() as session:
                digests = [item.sha256 for item in items]
                existing = {
                    row.sha256: row for row in session.scalars(select(Image).where(Image.sha256.in_(digests)))
                }
                fresh: list[tuple[Image, np.ndarray]] = []
                for item, vector in zip(items, vectors, strict=True):
                    if item.sha256 in existing:
                        results.append(Added(existing[item.sha256], duplicate=True))
                        continue
                    if copy_files or item.source_path is None:
                        self.files.write(item.sha256, item.decoded.format, item.data)
                    row = Image(
                        sha256=item.sha256,
                        original_name=item.original_name[:1024],
                        source_path=item.source_path,
                        width=item.decoded.width,
                        height=item.decoded.height,
                        size_bytes=len(item.data),
                        format=item.decoded.format,
                        meta=item.meta,
                        encoder=self.encoder.fingerprint,
                        vector=_vector_bytes(vector),
                    )
                    session.add(row)
                    existing[item.sha256] = row
                    fresh.append((row, vector))
                    results.append(Added(row, duplicate=False))
                session.flush()
            if fresh:
                ids = np.array([row.id for row, _ in fresh], dtype=np.int64)
                self.index.add(ids, np.stack([vec for _, vec in fresh]).astype(np.float32))
        return results

    def add_upload(self, data: bytes, name: str, meta: dict[str, Any] | None = None) -> Added:
        existing = self.find_by_sha256(sha256_of(data))
        if existing is not None:
            return Added(existing, duplicate=True)
        item = self.prepare_upload(data, name, meta)
        [added] = self.ingest([item], self.embed_prepared([item], bounded=True))
        if not added.duplicate:
            self.save_index()
        return added

    def delete(self, image_id: int) -> Image:
        with self._write_lock:
            with self.sessions.begin() as session:
                row = session.get(Image, image_id)
                if row is None:
                    raise NotFoundError(f"no image with id {image_id}")
                session.delete(row)
            self.index.remove([image_id])
        self.save_index()
        self.files.delete(row.sha256, row.format)
        return row

    def save_index(self) -> None:
        with self._write_lock:
            self.index.save(self.settings.index_path)

    # -- reading -----------------------------------------------------------------------------------------
    def get(self, image_id: int) -> Image:
        with self.sessions() as session:
            row = session.get(Image, image_id)
        if row is None:
            raise NotFoundError(f"no image with id {image_id}")
        return row

    def file_path(self, row: Image) -> Path:
        stored = self.files.path_for(row.sha256, row.format)
        if stored.exists():
            return stored
        if row.source_path and Path(row.source_path).exists():
            return Path(row.source_path)
        raise NotFoundError(
            f"the file of image {row.id} is missing (looked at {stored}"
            + (f" and {row.source_path}" if row.source_path else "")
            + ")"
        )

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        self.catch_up()
        scores, ids = self.index.search(vectors, k)
        wanted = {int(i) for i in ids.ravel() if i >= 0}
        with self.sessions() as session:
            rows = {row.id: row for row in session.scalars(select(Image).where(Image.id.in_(wanted)))}
        # An id the database no longer has (deleted between the two reads) is dropped, never returned.
        return [
            [Hit(rows[int(i)], float(s)) for s, i in zip(srow, irow, strict=True) if int(i) in rows]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def search_image(self, data: bytes, k: int) -> list[Hit]:
        return self.search_vectors(self.embed_query(data)[None, :], k)[0]

    def count(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Image)) or 0)

    def stored_items(self, batch: int = 256) -> Iterable[list[Image]]:
        """All rows in id order, a batch at a time (for re-embedding)."""
        last = 0
        while True:
            with self.sessions() as session:
                rows = list(
                    session.scalars(select(Image).where(Image.id > last).order_by(Image.id).limit(batch))
                )
            if not rows:
                return
            yield rows
            last = rows[-1].id

    def stats(self) -> dict[str, Any]:
        self.catch_up()
        return {
            "count": self.count(),
            "indexed": self.index.ntotal,
            "dimension": self.encoder.dim,
            "encoder": self.encoder.fingerprint,
            "index_type": f"IDMap2,{self.index.description} (inner product)",
            "device": str(self.encoder.device),
        }


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

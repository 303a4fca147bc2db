"""The collection: the only place that combines the encoder, the vector index, the database and the files.

Write order is what keeps a crash harmless: file (atomic, content-addressed) → database commit (row and
vector together) → index add → index save. The database is the source of truth; on open, the index is
reconciled with it (missing vectors replayed from the rows, stray ids dropped), so a crash between any two
steps costs at most the work that was not yet committed, and never leaves an image searchable twice.

Routes and jobs call this one class; the work behind it lives beside it, a job a module: opening.py (checks
and mends at open), writing.py (the inserts), following.py (the change feed), swaps.py (another process's
new encoder or index), index_file.py (the FAISS file), results.py (hits).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL.Image import Image as PILImage
from sqlalchemy import ColumnElement, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.collection import following, index_file, opening, stores, writing
from app.collection.features import StoredFeatures
from app.collection.presence import require_collection
from app.collection.results import Added, Hit, hits_of
from app.collection.swaps import SwapFollower
from app.config import Settings
from app.db.changes import DELETE, UPDATE, record_change
from app.db.session import make_session_factory, open_database
from app.db.tables import Image
from app.errors import InvalidRequestError, NotFoundError, ServiceBusyError
from app.files.decoding import Storable, decode_or_raise, sha256_of
from app.files.locate import image_file, looked_at
from app.files.storage import FileStore
from app.gate import InferenceGate
from app.jobs.records import ImageRecord
from app.observability import NO_METER, InferenceMeter
from app.search.queries import Box, check_box, scaled_box
from app.search.reranking import NeighbourCache, RerankOptions, options_from_settings
from app.search.verification import QueryFeatures, VerifyOptions, rank_verified
from index import SearchParams, VectorIndex
from models import DecodedImage, Encoder, ImageEncoder
from models.local_features import extract

__all__ = ["Added", "Collection", "Hit", "require_collection"]

log = logging.getLogger("cbir.collection")


class Collection:
    def __init__(self, settings: Settings, encoder: ImageEncoder, engine: Engine, index: VectorIndex) -> None:
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
        self.meter: InferenceMeter = NO_METER  # the service sets its /metrics here
        self._seen_seq = 0  # the last change-feed entry this process's index reflects (see catch_up)
        self.rerank = options_from_settings(settings)  # requests may override it
        self._neighbours = NeighbourCache()
        self.verification = VerifyOptions(settings.verify_candidates)
        self.local_features = StoredFeatures(self.sessions, self.picture_of)  # for verification
        self._files_pool: ThreadPoolExecutor | None = None  # see ingest_many
        # Search-time defaults of the settings (None: the index's own); requests may override them.
        self.search_params = SearchParams(settings.nprobe, settings.ef_search)
        index.search_threads = settings.search_threads
        self.swaps = SwapFollower(self)  # follows `cbir reindex` and `cbir index-build`

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, encoder: ImageEncoder, *, upgrade_schema: bool = True) -> Collection:
        """Open (creating if needed) the collection in settings.data_dir for this encoder.

        Another encoder than the collection's is refused; `cbir reindex` switches (app/jobs/reindex.py).
        """
        engine = open_database(settings.db_url, data_dir=settings.data_dir, upgrade=upgrade_schema).engine
        if not upgrade_schema:
            opening.check_schema(engine, settings.db_url)
        opening.check_encoder(engine, settings, encoder)
        index, rebuilt = index_file.open_index(settings, engine, encoder)
        collection = cls(settings, encoder, engine, index)
        collection.reconcile()
        if rebuilt:
            collection.save_index(new_build=True)
        collection.sweep_orphans()
        return collection

    def close(self) -> None:
        if self._files_pool is not None:
            self._files_pool.shutdown()
        self.local_features.close()
        self.engine.dispose()

    def reconcile(self) -> tuple[int, int]:
        """Make the index hold exactly the database's ids of this encoder; returns (replayed, dropped)."""
        with self._write_lock:
            missing, stray = self._sync_with_rows(self.index)
        if missing or stray:
            log.warning(
                "index and database disagreed: replayed %d vectors from the database, dropped %d stray ids",
                missing,
                stray,
            )
            self.save_index()
        return missing, stray

    def _sync_with_rows(self, index: VectorIndex) -> tuple[int, int]:
        """Bring ``index`` to the rows (opening.sync_with_rows) under the write lock the caller holds."""
        self._seen_seq, replayed, dropped = opening.sync_with_rows(
            index, self.sessions, self.encoder.fingerprint, self.encoder.dim
        )
        return replayed, dropped

    def catch_up(self) -> int:
        """Apply what other processes (replicas, `cbir index`, a delete anywhere) committed since last time:
        additions and deletions alike, from the change feed (app/collection/following.py). Returns the number
        of ids added or removed.

        One ``max(seq)`` lookup when nothing changed, cheap enough to run before every search: a change
        committed anywhere is seen by the next search on every process.
        """
        self.swaps.look()
        if following.latest(self.sessions) <= self._seen_seq:
            return 0
        with self._write_lock:
            self._seen_seq, added, removed = following.follow(
                self.index, self.sessions, self._seen_seq, self.encoder.fingerprint, self.encoder.dim
            )
        return added + removed

    # -- swapping in what another process replaced (app/collection/swaps.py) ------------------------------
    def adopt_encoder(self, settings: Settings, encoder: ImageEncoder, index: VectorIndex, seq: int) -> None:
        """Serve ``encoder`` with its ``index`` (built from the rows up to the feed's ``seq``) from now on."""
        with self._write_lock:
            self.settings, self.encoder, self.index = settings, encoder, index
            self._seen_seq = seq

    def adopt_index(self, index: VectorIndex, encoder: ImageEncoder) -> tuple[int, int] | None:
        """Serve ``index`` (another build for ``encoder``) once the rows committed since its build are in it;
        returns (replayed, dropped), or None if ``encoder`` was switched meanwhile."""
        with self._write_lock:
            if self.encoder is not encoder:
                return None
            synced = self._sync_with_rows(index)
            self.index = index
        return synced

    @property
    def _picking_up(self) -> threading.Thread | None:  # tests/app/jobs/test_index_build.py waits on it
        return self.swaps.picking_up

    def sweep_orphans(self) -> tuple[int, int]:
        """Publish or remove what a crash left in the file store; returns (published, removed)."""
        return opening.sweep_files(
            self.files,
            self.known_sha256().__contains__,
            lambda digest: self.find_by_sha256(digest) is not None,
        )

    # -- embedding ---------------------------------------------------------------------------------------
    def embed_images(
        self, images: Sequence[PILImage], *, bounded: bool = False, encoder: ImageEncoder | None = None
    ) -> np.ndarray:
        """Embed through the inference gate; requests pass ``bounded=True`` and may get ServiceBusyError."""
        with self.gate.slot(bounded=bounded), self.meter.running(len(images)):
            return (encoder or self.encoder).embed(images)

    def embed_prepared(
        self, items: Sequence[ImageRecord], *, bounded: bool = False, encoder: ImageEncoder | None = None
    ) -> np.ndarray:
        return self.embed_images([item.decoded.image for item in items], bounded=bounded, encoder=encoder)

    def prepare_upload(self, data: bytes, name: str, meta: dict[str, Any] | None = None) -> ImageRecord:
        decoded = self._decode(data)
        record = ImageRecord.of_picture(sha256_of(data), data, decoded, name=name, meta=meta)
        record.local_features = extract(decoded.image).to_bytes()  # stored with the row (features.py)
        return record

    def embed_query(
        self, data: bytes, box: Box | None = None, encoder: ImageEncoder | None = None
    ) -> np.ndarray:
        """The query's descriptor; with a box (x0, y0, x1, y1 in the original's pixels), the region's."""
        encoder = encoder or self.encoder
        return self._embed_decoded(self._decode(data, encoder), box, encoder)

    def _embed_decoded(self, decoded: DecodedImage, box: Box | None, encoder: ImageEncoder) -> np.ndarray:
        if box is None:
            return self.embed_images([decoded.image], bounded=True, encoder=encoder)[0]
        if not isinstance(encoder, Encoder):
            raise InvalidRequestError(
                f"the configured encoder ({encoder.fingerprint}) cannot pool a region of its feature map: "
                "search without a box, or crop the query yourself"
            )
        check_box(box, decoded)
        with self.gate.slot(bounded=True), self.meter.running(1):
            return encoder.embed_region(decoded.image, scaled_box(box, decoded))

    # -- writing -----------------------------------------------------------------------------------------
    def known_sha256(self) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Image.sha256)))

    def find_by_sha256(self, digest: str) -> Image | None:
        with self.sessions() as session:
            return session.scalars(select(Image).where(Image.sha256 == digest)).first()

    def ingest(
        self,
        items: Sequence[Storable],
        vectors: np.ndarray,
        *,
        copy_files: bool = True,
        made_by: str | None = None,
    ) -> list[Added]:
        """Store a batch in one transaction, then add it to the index (not saved: see save_index).

        ``made_by``: the fingerprint of the encoder that computed ``vectors`` (None: the current one).
        """
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
        advice = (
            "a running service follows within moments, so retry; restart a bulk job with the new settings"
        )
        with self._write_lock:
            with self._inserting(made_by, advice) as (session, staged):
                results = writing.insert_rows(
                    session,
                    self.files,
                    items,
                    vectors,
                    self.encoder.fingerprint,
                    copy_files=copy_files,
                    staged=staged,
                )
            fresh = [
                (added.image, vector)
                for added, vector in zip(results, vectors, strict=True)
                if not added.duplicate
            ]
            if fresh:
                ids = np.array([row.id for row, _ in fresh], dtype=np.int64)
                self.index.add(ids, np.stack([vec for _, vec in fresh]).astype(np.float32))
        return results

    @contextmanager
    def _inserting(
        self, made_by: str | None, advice: str, *, batch: bool = False
    ) -> Iterator[tuple[Session, list[Path]]]:
        """Under the write lock: the checks every insert passes, then its transaction and staged files."""
        writing.refuse_if_swapped(made_by, self.encoder.fingerprint)
        writing.require_store(self.index)
        with writing.staging(self.files, batch=batch) as staged, self.sessions.begin() as session:
            writing.refuse_if_switched(session, self.encoder.fingerprint, advice)
            yield session, staged

    def ingest_many(
        self,
        items: Sequence[Storable],
        vectors: np.ndarray,
        *,
        copy_files: bool = True,
        made_by: str | None = None,
    ) -> tuple[int, int]:
        """The bulk job's ingest: one transaction, one FAISS add; returns (added, duplicates).

        Same write order and checks as ingest, but rows go in as one executemany INSERT instead of ORM
        objects, and files are staged and published by a thread pool: at thousands of images a second,
        ORM bookkeeping and one fsync after another were what bounded a GPU host (README, "How fast").
        """
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
        with self._write_lock:
            advice = "restart the bulk job with the new settings"
            with self._inserting(made_by, advice, batch=True) as (session, staged):
                ids, fresh = writing.insert_many(
                    session,
                    self.files,
                    self._file_pool(),
                    items,
                    vectors,
                    self.encoder.fingerprint,
                    copy_files=copy_files,
                    staged=staged,
                )
            if ids:
                self.index.add(np.array(ids, dtype=np.int64), np.asarray(vectors[fresh], dtype=np.float32))
        return len(ids), len(items) - len(ids)

    def _file_pool(self) -> ThreadPoolExecutor:
        if self._files_pool is None:
            self._files_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cbir-files")
        return self._files_pool

    def add_upload(self, data: bytes, name: str, meta: dict[str, Any] | None = None) -> Added:
        existing = self.find_by_sha256(sha256_of(data))
        if existing is not None:
            return Added(existing, duplicate=True)
        encoder = self.encoder  # a reindex may swap self.encoder while this upload is embedded
        item = self.prepare_upload(data, name, meta)
        vectors = self.embed_prepared([item], bounded=True, encoder=encoder)
        [added] = self.ingest([item], vectors, made_by=encoder.fingerprint)
        if not added.duplicate:
            self.save_index()
        return added

    def delete(self, image_id: int) -> Image:
        deleted = self.delete_where(Image.id == image_id)
        if not deleted:
            raise NotFoundError(f"no image with id {image_id}")
        return deleted[0]

    def delete_where(self, condition: ColumnElement[bool]) -> list[Image]:
        """Delete every image matching ``condition`` in one transaction; the index and files follow."""
        with self._write_lock:
            writing.require_store(self.index)
            with self.sessions.begin() as session:
                rows = list(session.scalars(select(Image).where(condition)))
                for row in rows:
                    session.delete(row)
                if rows:
                    record_change(session, DELETE, [row.id for row in rows])
            if rows:
                self.index.remove([row.id for row in rows])
        if rows:
            self.save_index()
        for row in rows:
            self.files.delete(row.sha256, row.format)
        return rows

    def update_metadata(self, image_id: int, meta: dict[str, Any]) -> Image:
        """Replace an image's metadata; recorded in the feed so every process's caches may follow."""
        with self._write_lock, self.sessions.begin() as session:
            row = session.get(Image, image_id)
            if row is None:
                raise NotFoundError(f"no image with id {image_id}")
            row.meta = dict(meta)
            record_change(session, UPDATE, [image_id])
        return row

    def save_index(self, *, new_build: bool = False) -> None:
        """Save the index file, unless it now holds another build of the index (``new_build``: this index
        is one, built here at open, and replaces whatever the file holds)."""
        if stores.is_shared(self.index):
            return  # Milvus persists (and flushes) each write itself
        with self._write_lock:
            saved = index_file.save_unless_replaced(
                self.index, self.settings.index_path, self.engine, new_build=new_build
            )
            if saved is not None:
                self.swaps.file_stamp = saved

    # -- reading -----------------------------------------------------------------------------------------
    def get(self, image_id: int) -> Image:
        with self.sessions() as session:
            row = session.get(Image, image_id)
        if row is None:
            raise NotFoundError(f"no image with id {image_id}")
        return row

    def file_path(self, row: Image) -> Path:
        found = image_file(self.files, row.sha256, row.format, row.source_path)
        if found is None:
            places = " and ".join(map(str, looked_at(self.files, row.sha256, row.format, row.source_path)))
            raise NotFoundError(f"the file of image {row.id} is missing (looked at {places})")
        return found

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int,
        rerank: RerankOptions | None = None,
        index: VectorIndex | None = None,
        params: SearchParams | None = None,
        *,
        allowed_ids: np.ndarray | None = None,
        exclude: Sequence[int | None] | None = None,
        pictures: Sequence[PILImage | None] | None = None,
    ) -> list[list[Hit]]:
        """Top k per query through the one ranking function that `cbir evaluate` measures too.

        ``index`` pins the index the vectors were made for (the current one may be swapped meanwhile);
        ``allowed_ids`` restricts the search to a filter's matches, ``exclude`` leaves one id out per query.
        ``pictures``: the query pictures, for geometric verification of the first results (None: none).
        """
        pinned = index
        features = [None if p is None else QueryFeatures(p) for p in pictures or [None] * len(vectors)]
        for _ in range(3):
            self.catch_up()
            index = pinned or self.index
            ranked = rank_verified(
                index,
                vectors,
                k,
                rerank or self.rerank,
                self.verification,
                features,
                self.local_features,
                cache=self._neighbours,
                params=params or self.search_params,
                allowed_ids=allowed_ids,
                exclude=exclude,
            )
            wanted = {int(i) for i in ranked.ids.ravel() if i >= 0}
            with self.sessions() as session:
                rows = {row.id: row for row in session.scalars(select(Image).where(Image.id.in_(wanted)))}
            if len(rows) == len(wanted):
                break
            # Deleted by another process between the feed check and this read: follow the feed again and
            # search again, so the answer still holds k hits when the collection holds k images.
        return hits_of(ranked, rows)

    def picture_of(self, image_id: int) -> PILImage | None:
        """A stored image decoded as uploads are, for its local features (None: gone or unreadable)."""
        try:
            return self._decode(self.file_path(self.get(image_id)).read_bytes()).image
        except (NotFoundError, OSError, InvalidRequestError) as exc:
            log.info("no local features for image %s: %s", image_id, exc)
            return None

    def search_image(
        self,
        data: bytes,
        k: int,
        rerank: RerankOptions | None = None,
        box: Box | None = None,
        params: SearchParams | None = None,
        allowed_ids: np.ndarray | None = None,
    ) -> list[Hit]:
        """Without explicit options, the service's re-ranking; a region (box) query ranks plainly, because
        query expansion and DBA pull towards pictures like the whole neighbourhood, while a region query
        looks for one object (on Corel objects pasted into other photos: top-5 hits 17/20 plain, 15/20
        re-ranked; README, "Region queries")."""
        if rerank is None and box is not None:
            rerank = RerankOptions.off()
        self.catch_up()  # notices an encoder switch that `cbir reindex` committed
        for _ in range(3):
            # Embed and search with one encoder's pair even if a switch swaps them in between.
            encoder, index = self.encoder, self.index
            decoded = self._decode(data, encoder)
            vector = self._embed_decoded(decoded, box, encoder)
            if index.fingerprint == encoder.fingerprint:
                # A region query looks for an object inside other pictures, not for the same picture.
                verified = box is None and self.verification.active
                picture = decoded.image if verified else None
                return self.search_vectors(
                    vector[None, :], k, rerank, index, params, allowed_ids=allowed_ids, pictures=[picture]
                )[0]
        raise ServiceBusyError("the collection is switching to another encoder: retry in a moment")

    def _decode(self, data: bytes, encoder: ImageEncoder | None = None) -> DecodedImage:
        """Decoded as uploads are, for ``encoder`` (the current one by default)."""
        max_side = (encoder or self.encoder).max_side
        return decode_or_raise(data, max_side=max_side, max_pixels=self.settings.max_pixels)

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
            "index_type": f"{index_file.describe(self.index)} (inner product)",
            "device": str(self.encoder.device),
            "runtime": self.encoder.describe().get("runtime", "torch"),
            # HNSW keeps deleted images' vectors (and graph nodes) until `cbir index-build` rebuilds it.
            "removed_entries": self.index.tombstones,
        }

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL.Image import Image as PILImage
from sqlalchemy import ColumnElement, Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.collection import following, index_file, stores
from app.collection.presence import require_collection
from app.collection.versions import (
    encoder_spec,
    ensure_active,
    read_active,
    read_active_fingerprint,
    settings_for,
)
from app.config import Settings
from app.db import migrate
from app.db import vectors as vectors_codec
from app.db.changes import ADD, DELETE, UPDATE, last_seq, record_change
from app.db.session import make_session_factory, open_database
from app.db.tables import Image
from app.errors import CollectionMismatchError, InvalidRequestError, NotFoundError
from app.files.decoding import Storable, decode_or_raise, sha256_of
from app.files.locate import image_file, looked_at
from app.files.storage import FileStore
from app.gate import InferenceGate, ServiceBusyError
from app.jobs.index_build import build_from_rows, index_file_lock, spec_for_collection
from app.jobs.records import ImageRecord
from app.observability import NO_METER, InferenceMeter
from app.search.queries import Box
from app.search.reranking import NeighbourCache, RerankOptions, options_from_settings
from app.search.verification import FeatureCache, QueryFeatures, VerifyOptions, rank_verified
from index import SearchParams, VectorIndex, VectorIndexError
from models import Encoder, ImageEncoder

__all__ = ["Added", "Collection", "Hit", "require_collection"]

log = logging.getLogger("cbir.collection")

REINDEX_HINT = "run `cbir reindex` to re-embed the stored images with the configured encoder"


@dataclass(frozen=True)
class Hit:
    image: Image
    score: float
    # Geometric verification (app/search/verification.py): RANSAC inliers (None: not verified) and the
    # calibrated probability that the hit is the same picture as the query (0 when not verified).
    inliers: int | None = None
    p_same: float = 0.0

    @property
    def match(self) -> Literal["same", "similar"]:
        """ "same" (an edited copy or near-duplicate of the query) or "similar"."""
        return "same" if self.p_same >= 0.5 else "similar"


@dataclass(frozen=True)
class Added:
    image: Image
    duplicate: bool


def _row_values(item: Storable, vector: np.ndarray, fingerprint: str) -> dict[str, Any]:
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


class Collection:
    def __init__(
        self,
        settings: Settings,
        encoder: ImageEncoder,
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
        self.meter: InferenceMeter = NO_METER  # the service sets its /metrics here
        self._seen_seq = 0  # the last change-feed entry this process's index reflects (see catch_up)
        self.rerank = options_from_settings(settings)  # requests may override it
        self._neighbours = NeighbourCache()
        self.verification = VerifyOptions(settings.verify_candidates)
        self.local_features = FeatureCache(self.picture_of)  # derived from the stored files, see verification
        self._switching: threading.Thread | None = None  # see _follow_switch
        self._files_pool: ThreadPoolExecutor | None = None  # see ingest_many
        self._failed_switch: str | None = None
        # Search-time defaults of the settings (None: the index's own); requests may override them.
        self.search_params = SearchParams(settings.nprobe, settings.ef_search)
        index.search_threads = settings.search_threads
        self._file_stamp = index_file.stamp(settings.index_path)  # see _follow_rebuild
        self._picking_up: threading.Thread | None = None
        self._follow_lock = threading.Lock()  # one request thread at a time looks at the file

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        settings: Settings,
        encoder: ImageEncoder,
        *,
        upgrade_schema: bool = True,
    ) -> Collection:
        """Open (creating if needed) the collection in settings.data_dir for this encoder.

        Another encoder than the collection's is refused; `cbir reindex` switches (app/jobs/reindex.py).
        """
        engine = open_database(settings.db_url, data_dir=settings.data_dir, upgrade=upgrade_schema).engine
        if not upgrade_schema:
            missing = migrate.pending(engine)
            if missing:
                raise CollectionMismatchError(
                    f"the database at {settings.db_url} needs migrations {missing}: run `cbir db upgrade`"
                )
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
        """Replay into ``index`` the rows it lacks, drop the ids the database no longer has; the caller holds
        the write lock, so no ingest can commit in between. Returns (replayed, dropped)."""
        current = Image.encoder == self.encoder.fingerprint
        with self.sessions() as session:
            seq = last_seq(session)  # read first: whatever commits after it is replayed from the feed
            db_ids = np.fromiter(session.scalars(select(Image.id).where(current)), dtype=np.int64)
            index_ids = index.ids()
            missing = np.setdiff1d(db_ids, index_ids)
            stray = np.setdiff1d(index_ids, db_ids)
            for start in range(0, len(missing), 4096):
                chunk = [int(i) for i in missing[start : start + 4096]]
                rows = session.execute(select(Image.id, Image.vector).where(Image.id.in_(chunk))).all()
                if rows:
                    ids = np.array([row.id for row in rows], dtype=np.int64)
                    index.add(ids, vectors_codec.decode_many([row.vector for row in rows], self.encoder.dim))
            self._seen_seq = seq
        if len(stray):
            index.remove(stray)
        return len(missing), len(stray)

    def catch_up(self) -> int:
        """Apply what other processes (replicas, `cbir index`, a delete anywhere) committed since last time:
        additions and deletions alike, from the change feed (app/collection/following.py). Returns the number
        of ids added or removed.

        One ``max(seq)`` lookup when nothing changed, cheap enough to run before every search: a change
        committed anywhere is seen by the next search on every process.
        """
        self._follow_switch()
        self._follow_rebuild()
        if following.latest(self.sessions) <= self._seen_seq:
            return 0
        with self._write_lock:
            self._seen_seq, added, removed = following.follow(
                self.index, self.sessions, self._seen_seq, self.encoder.fingerprint, self.encoder.dim
            )
        return added + removed

    # -- following `cbir reindex` --------------------------------------------------------------------------
    def _follow_switch(self) -> None:
        """If another process switched the collection's encoder, start swapping it in (in the background)."""
        if self._switching is not None and self._switching.is_alive():
            return
        active = read_active_fingerprint(self.engine)
        if active is None or active in (self.encoder.fingerprint, self._failed_switch):
            return
        self._switching = threading.Thread(
            target=self._switch, args=(active,), name="cbir-encoder-switch", daemon=True
        )
        self._switching.start()

    def _switch(self, fingerprint: str) -> None:
        """Build the recorded encoder and its index from the rows, then swap both in; requests go on being
        answered by the old pair until then (search_image pairs an encoder with its own index)."""
        from app.encoders import encoder_from_settings

        try:
            with self.sessions() as session:
                active = read_active(session)
            if active is None or active.fingerprint != fingerprint:
                return
            settings = settings_for(self.settings, active.spec)
            encoder = encoder_from_settings(settings)
            if encoder.fingerprint != fingerprint:
                raise CollectionMismatchError(
                    f"the recorded settings ({active.describe()}) build '{encoder.fingerprint}' here, not "
                    f"'{fingerprint}': restart the service with the collection's encoder"
                )
            if stores.is_shared(self.index):
                raise CollectionMismatchError(
                    "a shared vector store is rebuilt once, not by each replica: run `cbir index-build` "
                    "after `cbir reindex`, then restart the replicas with the collection's encoder"
                )
            seq = following.latest(self.sessions)  # before the rows: later commits come from the feed
            index = build_from_rows(
                self.sessions,
                fingerprint,
                encoder.dim,
                lambda n: spec_for_collection(settings, n, encoder.dim),
            )
            index.search_threads = settings.search_threads
            stored = index.ids()
            with self._write_lock:
                self.settings, self.encoder, self.index = settings, encoder, index
                self._seen_seq = seq
            log.warning(
                "switched to encoder %s (%d images), as `cbir reindex` recorded", fingerprint, len(stored)
            )
        except Exception:
            self._failed_switch = fingerprint
            log.exception(
                "could not switch to encoder %s; still serving %s", fingerprint, self.encoder.fingerprint
            )

    # -- following `cbir index-build` ----------------------------------------------------------------------
    def _follow_rebuild(self) -> None:
        """If another process wrote an index of another build (`cbir index-build`), load it in the background.

        A stat() per call; the header is read only when the file changed, and the file only when its build
        is not this index's (the saves of a bulk job beside the service keep the build and are not reloaded).
        """
        if stores.is_shared(self.index):
            return  # a shared store is rebuilt in place; there is no file to pick up
        if not self._follow_lock.acquire(blocking=False):
            return  # another request is looking already
        try:
            if self._picking_up is not None and self._picking_up.is_alive():
                return
            path = self.settings.index_path
            stamp = index_file.stamp(path)
            if stamp == self._file_stamp:
                return
            self._file_stamp = stamp
            build = index_file.build_on_disk(path, self.encoder.fingerprint)
            if build is None or build == self.index.build_id:
                return
            self._picking_up = threading.Thread(
                target=self._pick_up, args=(build,), name="cbir-index-pickup", daemon=True
            )
            self._picking_up.start()
        finally:
            self._follow_lock.release()

    def _pick_up(self, build: str) -> None:
        """Load the new build, replay what was committed since it read the rows, swap it in."""
        try:
            encoder = self.encoder
            index = VectorIndex.load(
                self.settings.index_path, dim=encoder.dim, fingerprint=encoder.fingerprint
            )
            if index.build_id != build:
                self._file_stamp = None  # replaced again meanwhile: look again on the next request
                return
            index.search_threads = self.settings.search_threads
            with self._write_lock:
                if self.encoder is not encoder:
                    return  # an encoder switch won the race; its index is built from the rows anyway
                replayed, dropped = self._sync_with_rows(index)
                self.index = index
            log.warning(
                "picked up the index built by `cbir index-build`: %s, %d vectors (%d replayed from the "
                "database, %d dropped)",
                index.spec.describe(),
                index.ntotal,
                replayed,
                dropped,
            )
        except (VectorIndexError, OSError):
            log.exception("could not load the rebuilt index; still serving the current one")

    def sweep_orphans(self) -> tuple[int, int]:
        """Publish or remove what a crash left in the file store; returns (published, removed)."""
        published, removed = self.files.sweep(
            self.known_sha256().__contains__, lambda digest: self.find_by_sha256(digest) is not None
        )
        if published or removed:
            log.warning(
                "file store after a crash: published %d files whose rows had committed, removed %d that no "
                "row owns: %s",
                len(published),
                len(removed),
                [p.name for p in (published + removed)[:5]],
            )
        return len(published), len(removed)

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
        decoded = decode_or_raise(data, max_side=self.encoder.max_side, max_pixels=self.settings.max_pixels)
        return ImageRecord.of_picture(sha256_of(data), data, decoded, name=name, meta=meta)

    def embed_query(
        self, data: bytes, box: Box | None = None, encoder: ImageEncoder | None = None
    ) -> np.ndarray:
        """The query's descriptor; with a box (x0, y0, x1, y1 in the original's pixels), the region's."""
        encoder = encoder or self.encoder
        decoded = decode_or_raise(data, max_side=encoder.max_side, max_pixels=self.settings.max_pixels)
        if box is None:
            return self.embed_images([decoded.image], bounded=True, encoder=encoder)[0]
        if not isinstance(encoder, Encoder):
            raise InvalidRequestError(
                f"the configured encoder ({encoder.fingerprint}) cannot pool a region of its feature map: "
                "search without a box, or crop the query yourself"
            )
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= decoded.width and 0 <= y0 < y1 <= decoded.height):
            raise InvalidRequestError(
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must lie inside the {decoded.width}x{decoded.height} "
                "image with x0 < x1 and y0 < y1 (pixels of the uploaded image, after EXIF rotation)"
            )
        # The decoded picture is resized to max_side; the box is in the original's pixels.
        sx, sy = decoded.image.width / decoded.width, decoded.image.height / decoded.height
        scaled = (x0 * sx, y0 * sy, min(x1 * sx, decoded.image.width), min(y1 * sy, decoded.image.height))
        with self.gate.slot(bounded=True), self.meter.running(1):
            return encoder.embed_region(decoded.image, scaled)

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
        results: list[Added] = []
        staged: list[Path] = []
        with self._write_lock:
            self._refuse_if_swapped(made_by)
            self._require_store()
            try:
                self._insert_rows(items, vectors, results, staged, copy_files)
            except BaseException:
                for path in staged:
                    self.files.discard(path)
                raise
            for path in staged:  # committed: the files may take their final names
                self.files.publish(path)
            fresh = [
                (added.image, vector)
                for added, vector in zip(results, vectors, strict=True)
                if not added.duplicate
            ]
            if fresh:
                ids = np.array([row.id for row, _ in fresh], dtype=np.int64)
                self.index.add(ids, np.stack([vec for _, vec in fresh]).astype(np.float32))
        return results

    def _insert_rows(
        self,
        items: Sequence[Storable],
        vectors: np.ndarray,
        results: list[Added],
        staged: list[Path],
        copy_files: bool,
    ) -> None:
        """One transaction: rows (with vectors) for the new items; their files staged, not yet published."""
        with self.sessions.begin() as session:
            self._refuse_if_switched(
                session,
                "a running service follows within moments, so retry; restart a bulk job with the new "
                "settings",
            )
            digests = [item.sha256 for item in items]
            existing = {
                row.sha256: row for row in session.scalars(select(Image).where(Image.sha256.in_(digests)))
            }
            for item, vector in zip(items, vectors, strict=True):
                if item.sha256 in existing:
                    results.append(Added(existing[item.sha256], duplicate=True))
                    continue
                if copy_files or item.source_path is None:
                    path = self.files.stage(item.sha256, item.format, item.data)
                    if path is not None:
                        staged.append(path)
                row = Image(**_row_values(item, vector, self.encoder.fingerprint))
                session.add(row)
                existing[item.sha256] = row
                results.append(Added(row, duplicate=False))
            session.flush()
            record_change(session, ADD, [added.image.id for added in results if not added.duplicate])

    def _refuse_if_swapped(self, made_by: str | None) -> None:
        """Vectors embedded before this process swapped in a new encoder must not be stored under it.

        Called under the write lock, which the swap (_switch) takes too.
        """
        if made_by is not None and made_by != self.encoder.fingerprint:
            raise ServiceBusyError(
                f"the collection switched to encoder '{self.encoder.fingerprint}' while these images were "
                f"embedded by '{made_by}' (`cbir reindex`): retry, and they are embedded by the new one"
            )

    def _require_store(self) -> None:
        """A shared store must answer before a write commits: if Milvus is down, the write is refused (503,
        StoreUnavailableError) instead of committing rows it cannot index. Should it fail between this check
        and the store write, the rows are committed and every process re-adds them from the change feed."""
        if stores.is_shared(self.index):
            self.index.ntotal  # noqa: B018  (one round trip; raises StoreUnavailableError)

    def _refuse_if_switched(self, session: Session, advice: str) -> None:
        """Writes under an encoder that `cbir reindex` has just replaced would mix vector spaces."""
        active = read_active(session)
        if active is not None and active.fingerprint != self.encoder.fingerprint:
            raise ServiceBusyError(
                f"`cbir reindex` switched the collection to encoder '{active.fingerprint}': {advice}"
            )

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
        staged: list[Path] = []
        with self._write_lock:
            self._refuse_if_swapped(made_by)
            self._require_store()
            try:
                with self.sessions.begin() as session:
                    self._refuse_if_switched(session, "restart the bulk job with the new settings")
                    digests = [item.sha256 for item in items]
                    taken = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(digests))))
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
                    staged = self.files.stage_many(to_copy, self._file_pool())
                    rows = [_row_values(items[p], vectors[p], self.encoder.fingerprint) for p in fresh]
                    ids: list[int] = []
                    if rows:  # executemany, then the ids by hash: far cheaper than RETURNING row by row
                        session.execute(insert(Image), rows)
                        new = [row["sha256"] for row in rows]
                        found = session.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(new)))
                        id_of = {digest: image_id for digest, image_id in found}
                        ids = [id_of[digest] for digest in new]
                        record_change(session, ADD, ids)
            except BaseException:
                for path in staged:
                    self.files.discard(path)
                raise
            self.files.publish_many(staged)
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
            self._require_store()
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
            if read_active_fingerprint(self.engine) not in (None, self.index.fingerprint):
                return  # `cbir reindex` switched the collection: the index file is the new encoder's now
            path = self.settings.index_path
            with index_file_lock(path):
                on_disk = index_file.build_on_disk(path, self.index.fingerprint)
                if on_disk is not None and on_disk != self.index.build_id and not new_build:
                    # Another process built a new index (`cbir index-build`): it wins; this process picks it
                    # up (see _follow_rebuild) and replays its own rows into it from the database.
                    log.info("index file holds another build (%s): not overwriting it", on_disk)
                    return
                self.index.save(path)
                self._file_stamp = index_file.stamp(path)

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
            scores, ids = ranked.scores, ranked.ids
            wanted = {int(i) for i in ids.ravel() if i >= 0}
            with self.sessions() as session:
                rows = {row.id: row for row in session.scalars(select(Image).where(Image.id.in_(wanted)))}
            if len(rows) == len(wanted):
                break
            # Deleted by another process between the feed check and this read: follow the feed again and
            # search again, so the answer still holds k hits when the collection holds k images.
        # An id the database no longer has is dropped, never returned.
        return [
            [
                Hit(rows[int(i)], float(s), None if n < 0 else int(n), float(p))
                for s, i, n, p in zip(srow, irow, nrow, prow, strict=True)
                if int(i) in rows
            ]
            for srow, irow, nrow, prow in zip(scores, ids, ranked.inliers, ranked.probabilities, strict=True)
        ]

    def picture_of(self, image_id: int) -> PILImage | None:
        """A stored image decoded as uploads are, for its local features (None: gone or unreadable)."""
        try:
            data = self.file_path(self.get(image_id)).read_bytes()
            return decode_or_raise(
                data, max_side=self.encoder.max_side, max_pixels=self.settings.max_pixels
            ).image
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
            vector = self.embed_query(data, box, encoder)
            if index.fingerprint == encoder.fingerprint:
                # A region query looks for an object inside other pictures, not for the same picture.
                picture = self._query_picture(data, encoder) if box is None else None
                return self.search_vectors(
                    vector[None, :], k, rerank, index, params, allowed_ids=allowed_ids, pictures=[picture]
                )[0]
        raise ServiceBusyError("the collection is switching to another encoder: retry in a moment")

    def _query_picture(self, data: bytes, encoder: ImageEncoder) -> PILImage | None:
        if not self.verification.active:
            return None
        return decode_or_raise(data, max_side=encoder.max_side, max_pixels=self.settings.max_pixels).image

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

"""The local features of stored images, for verifying a query's first results: stored, not re-derived.

Geometric verification needs the local features of ten candidates a query. Derived from the files at
query time (decode, resize, ORB) they made a query with a cold cache 4.3 times as dear as one without
verification (bench/query_cost.py), and a 12-megapixel photo's decode alone costs more than a whole query.
So they are extracted when the image is read for indexing and stored in its transaction
(app/db/tables.StoredLocalFeatures); a query reads its candidates' rows in one SELECT, through a small LRU
in memory. Rows without features (a collection from before, a JPEG decoded on the GPU) are derived from
the file at their first verification and stored by a background thread, so a query never waits for a
database writer (a bulk job holds SQLite's write lock for seconds at a time).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL.Image import Image as PILImage
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import StoredLocalFeatures
from models.local_features import LocalFeatures, extract

__all__ = ["StoredFeatures", "store_missing"]

log = logging.getLogger("cbir.collection")


def store_missing(session: Session, rows: Iterable[tuple[int, bytes]]) -> None:
    """Store (image id, features) for the images that have none; those that have them keep theirs."""
    values = [{"image_id": image_id, "data": data} for image_id, data in rows]
    if not values:
        return
    # The two databases cbir runs on (app/db/session.py) both have INSERT ... ON CONFLICT DO NOTHING.
    upsert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(upsert(StoredLocalFeatures).on_conflict_do_nothing(), values)


class StoredFeatures:
    """Local features of stored images by id: memory (LRU), then their rows, then their files."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        picture_of: Callable[[int], PILImage | None],
        max_items: int = 20_000,
    ) -> None:
        self._sessions = sessions
        self._picture_of = picture_of
        self._items: OrderedDict[int, LocalFeatures] = OrderedDict()
        self._max_items = max_items
        self._writes: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, image_ids: Sequence[int]) -> list[LocalFeatures | None]:
        """The features of each id, in order (None: the image is gone or its file unreadable)."""
        found: dict[int, LocalFeatures] = {}
        with self._lock:  # requests search from several threads at once
            for image_id in image_ids:
                held = self._items.get(image_id)
                if held is not None:
                    self._items.move_to_end(image_id)
                    found[image_id] = held
        missing = [i for i in dict.fromkeys(image_ids) if i not in found]
        if missing:
            with self._sessions() as session:
                rows = session.execute(
                    select(StoredLocalFeatures.image_id, StoredLocalFeatures.data).where(
                        StoredLocalFeatures.image_id.in_(missing)
                    )
                )
                for image_id, stored in rows:
                    found[image_id] = self._keep(image_id, LocalFeatures.from_bytes(stored))
            derived: list[tuple[int, bytes]] = []
            for image_id in missing:
                data = None if image_id in found else self._derive(image_id)
                if data is not None:
                    found[image_id] = self._keep(image_id, LocalFeatures.from_bytes(data))
                    derived.append((image_id, data))
            self._store_later(derived)
        return [found.get(i) for i in image_ids]

    def clear(self) -> None:
        """Forget what is held in memory (the stored rows stay)."""
        with self._lock:
            self._items.clear()

    def close(self) -> None:
        """Wait for the features being stored, so nothing writes after the collection closes."""
        with self._lock:
            writes, self._writes = self._writes, None
        if writes is not None:
            writes.shutdown(wait=True)

    def _keep(self, image_id: int, features: LocalFeatures) -> LocalFeatures:
        with self._lock:
            self._items[image_id] = features
            if len(self._items) > self._max_items:
                self._items.popitem(last=False)
        return features

    def _derive(self, image_id: int) -> bytes | None:
        picture = self._picture_of(image_id)
        # Through the byte form, so a derived and a stored feature set verify alike.
        return None if picture is None else extract(picture).to_bytes()

    def _store_later(self, rows: list[tuple[int, bytes]]) -> None:
        if not rows:
            return
        with self._lock:
            if self._writes is None:
                self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbir-features")
            self._writes.submit(self._store, rows)

    def _store(self, rows: list[tuple[int, bytes]]) -> None:
        try:
            with self._sessions.begin() as session:
                store_missing(session, rows)
        except SQLAlchemyError as exc:  # e.g. the image was deleted meanwhile: derived again if needed
            log.info("local features of %d images not stored: %s", len(rows), exc)

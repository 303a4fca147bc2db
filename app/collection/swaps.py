"""Following what other processes replace wholesale: the encoder (`cbir reindex`), the index file
(`cbir index-build`).

The change feed (following.py) carries row changes; these two replace the collection's encoder or index
as a whole. A running service notices either on its next request (a read of the active encoder, a stat()
of the index file), builds or loads the replacement in a background thread, and swaps it in under the
collection's write lock; until then requests go on being answered by the pair it has, so nothing waits.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from app.collection import following, index_file, stores
from app.collection.versions import read_active, read_active_fingerprint, settings_for
from app.errors import CollectionMismatchError
from app.jobs.index_build import build_from_rows, spec_for_collection
from index import VectorIndex, VectorIndexError

if TYPE_CHECKING:
    from app.collection.facade import Collection

__all__ = ["SwapFollower"]

log = logging.getLogger("cbir.collection")


class SwapFollower:
    """Per collection: the background threads that swap in another process's new encoder or index."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.switching: threading.Thread | None = None  # building the encoder `cbir reindex` recorded
        self.failed_switch: str | None = None  # a fingerprint that could not be built here: not retried
        self.file_stamp = index_file.stamp(collection.settings.index_path)  # the index file as last seen
        self.picking_up: threading.Thread | None = None  # loading the file `cbir index-build` wrote
        self._looking = threading.Lock()  # one request thread at a time looks at the file

    def look(self) -> None:
        """Start following whichever of the two another process has done since the last look."""
        self._follow_switch()
        self._follow_rebuild()

    # -- `cbir reindex` ------------------------------------------------------------------------------------
    def _follow_switch(self) -> None:
        """If another process switched the collection's encoder, start swapping it in (in the background)."""
        if self.switching is not None and self.switching.is_alive():
            return
        collection = self.collection
        active = read_active_fingerprint(collection.engine)
        if active is None or active in (collection.encoder.fingerprint, self.failed_switch):
            return
        self.switching = threading.Thread(
            target=self.switch, args=(active,), name="cbir-encoder-switch", daemon=True
        )
        self.switching.start()

    def switch(self, fingerprint: str) -> None:
        """Build the recorded encoder and its index from the rows, then swap both in; requests go on being
        answered by the old pair until then (search_image pairs an encoder with its own index)."""
        from app.encoders import encoder_from_settings

        collection = self.collection
        try:
            with collection.sessions() as session:
                active = read_active(session)
            if active is None or active.fingerprint != fingerprint:
                return
            settings = settings_for(collection.settings, active.spec)
            encoder = encoder_from_settings(settings)
            if encoder.fingerprint != fingerprint:
                raise CollectionMismatchError(
                    f"the recorded settings ({active.describe()}) build '{encoder.fingerprint}' here, not "
                    f"'{fingerprint}': restart the service with the collection's encoder"
                )
            if stores.is_shared(collection.index):
                raise CollectionMismatchError(
                    "a shared vector store is rebuilt once, not by each replica: run `cbir index-build` "
                    "after `cbir reindex`, then restart the replicas with the collection's encoder"
                )
            seq = following.latest(collection.sessions)  # before the rows: later commits come from the feed
            index = build_from_rows(
                collection.sessions,
                fingerprint,
                encoder.dim,
                lambda n: spec_for_collection(settings, n, encoder.dim),
            )
            index.search_threads = settings.search_threads
            images = len(index.ids())
            collection.adopt_encoder(settings, encoder, index, seq)
            log.warning("switched to encoder %s (%d images), as `cbir reindex` recorded", fingerprint, images)
        except Exception:
            self.failed_switch = fingerprint
            log.exception(
                "could not switch to encoder %s; still serving %s",
                fingerprint,
                collection.encoder.fingerprint,
            )

    # -- `cbir index-build` --------------------------------------------------------------------------------
    def _follow_rebuild(self) -> None:
        """If another process wrote an index of another build (`cbir index-build`), load it in the background.

        A stat() per call; the header is read only when the file changed, and the file only when its build
        is not this index's (the saves of a bulk job beside the service keep the build and are not reloaded).
        """
        collection = self.collection
        if stores.is_shared(collection.index):
            return  # a shared store is rebuilt in place; there is no file to pick up
        if not self._looking.acquire(blocking=False):
            return  # another request is looking already
        try:
            if self.picking_up is not None and self.picking_up.is_alive():
                return
            path = collection.settings.index_path
            stamp = index_file.stamp(path)
            if stamp == self.file_stamp:
                return
            self.file_stamp = stamp
            build = index_file.build_on_disk(path, collection.encoder.fingerprint)
            if build is None or build == collection.index.build_id:
                return
            self.picking_up = threading.Thread(
                target=self._pick_up, args=(build,), name="cbir-index-pickup", daemon=True
            )
            self.picking_up.start()
        finally:
            self._looking.release()

    def _pick_up(self, build: str) -> None:
        """Load the new build, replay what was committed since it read the rows, swap it in."""
        collection = self.collection
        try:
            encoder = collection.encoder
            index = VectorIndex.load(
                collection.settings.index_path, dim=encoder.dim, fingerprint=encoder.fingerprint
            )
            if index.build_id != build:
                self.file_stamp = None  # replaced again meanwhile: look again on the next request
                return
            index.search_threads = collection.settings.search_threads
            synced = collection.adopt_index(index, encoder)
            if synced is None:
                return  # an encoder switch won the race; its index is built from the rows anyway
            replayed, dropped = synced
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

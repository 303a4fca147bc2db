"""The collection's vector index at open, and the FAISS file it lives in: which store, load or rebuild, and
what identifies a file's build, and saving it unless another process has replaced it meanwhile.

Split from the façade along the seam the vector-store work made: opening is a job of its own, and a
shared store (CBIR_VECTOR_STORE=milvus, app/collection/stores.py) has no file at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.collection import stores
from app.collection.versions import read_active_fingerprint
from app.config import Settings
from app.db.session import make_session_factory
from app.db.tables import Image
from app.errors import CollectionMismatchError
from app.jobs.index_build import build_from_rows, index_file_lock, spec_for_collection
from index import AUTO, IndexFileError, IndexMismatchError, VectorIndex, VectorIndexError
from models import ImageEncoder

log = logging.getLogger("cbir.collection")

__all__ = ["build_on_disk", "describe", "open_index", "save_unless_replaced", "stamp"]


def open_index(settings: Settings, engine: Engine, encoder: ImageEncoder) -> tuple[VectorIndex, bool]:
    """The collection's index and whether it was (re)built here, from the rows, and so needs saving.

    Rebuilt when there is no file (a new collection, or a deleted file), when the file is unusable or of
    another encoder (the database holds this encoder's vectors), and when CBIR_INDEX_TYPE names another type
    than the file's. With ``auto``, a file whose type differs from what the collection's size now calls for
    is kept (its searches are still right) and the log says to run `cbir index-build`: a rebuild of millions
    of vectors takes minutes, which a service start should not spend unasked.
    """
    path, dim, fingerprint = settings.index_path, encoder.dim, encoder.fingerprint
    if settings.vector_store == "milvus":
        # A shared store: open() reconciles it with the rows like a file. The collection drives it through
        # the VectorIndex methods that both have (add, remove, search, ids, reconstruct_batch, ntotal).
        return cast(VectorIndex, stores.open_milvus(settings, dim, fingerprint)), False

    def rebuild(reason: str | None) -> tuple[VectorIndex, bool]:
        if reason:
            log.warning("%s: rebuilding the index from the vectors stored in the database", reason)
        index = build_from_rows(
            make_session_factory(engine), fingerprint, dim, lambda n: spec_for_collection(settings, n, dim)
        )
        return index, True

    if not path.exists():
        return rebuild(None)
    try:
        index = VectorIndex.load(path, dim=dim, fingerprint=fingerprint)
    except IndexMismatchError as exc:
        if not _has_rows(engine, fingerprint):
            raise CollectionMismatchError(str(exc)) from exc
        # The rows are this encoder's: the file is one that a process still on the previous encoder
        # saved after `cbir reindex` switched the collection. The database is the source of truth.
        return rebuild(f"{exc}; but the database holds this encoder's vectors")
    except IndexFileError as exc:
        return rebuild(str(exc))
    wanted = spec_for_collection(settings, index.ntotal, dim)
    if wanted.type != index.spec.type:
        if settings.index_type != AUTO:
            return rebuild(
                f"index at {path} is {index.spec.describe()} but CBIR_INDEX_TYPE={settings.index_type}"
            )
        log.warning(
            "index at %s is %s; for %d vectors the automatic choice is %s: run `cbir index-build` to switch "
            "(searches stay correct meanwhile)",
            path,
            index.spec.describe(),
            index.ntotal,
            wanted.type,
        )
    return index, False


def describe(index: VectorIndex) -> str:
    describe = getattr(index, "describe", None)  # a shared store describes itself (index/milvus.py)
    return str(describe()) if callable(describe) else index.spec.describe()


def stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is replaced (inode, mtime, size); None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def build_on_disk(path: Path, fingerprint: str) -> str | None:
    """The build id of the index file if it is this encoder's and readable; None otherwise."""
    try:
        header = VectorIndex.read_header(path)
    except VectorIndexError:
        return None
    return str(header["build_id"]) if header["fingerprint"] == fingerprint else None


def save_unless_replaced(
    index: VectorIndex, path: Path, engine: Engine, *, new_build: bool
) -> tuple[int, int, int] | None:
    """Save ``index`` to ``path`` unless the file now holds another build of the index (``new_build``: this
    index is one, built at open, and replaces whatever the file holds); returns the saved file's stamp."""
    if read_active_fingerprint(engine) not in (None, index.fingerprint):
        return None  # `cbir reindex` switched the collection: the index file is the new encoder's now
    with index_file_lock(path):
        on_disk = build_on_disk(path, index.fingerprint)
        if on_disk is not None and on_disk != index.build_id and not new_build:
            # Another process built a new index (`cbir index-build`): it wins; this process picks it up
            # (app/collection/swaps.py) and replays its own rows into it from the database.
            log.info("index file holds another build (%s): not overwriting it", on_disk)
            return None
        index.save(path)
        return stamp(path)


def _has_rows(engine: Engine, fingerprint: str) -> bool:
    with Session(engine) as session:
        return session.scalar(select(Image.id).where(Image.encoder == fingerprint).limit(1)) is not None

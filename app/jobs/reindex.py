"""`cbir reindex`: switch a collection to the configured encoder while the service keeps answering.

1. Stage: every stored image not yet embedded by the new encoder is re-read from its file, embedded (the
   stages of `cbir index`, app/jobs/runner.py, so a reindexed vector equals a freshly indexed one), and its
   vector written to staged_vectors, a batch per transaction. Nothing the service reads changes, so it goes
   on answering from the old index; an interrupted run keeps what it staged and a rerun goes on from there.
2. Swap, in one transaction that first takes the database's write lock: if images arrived meanwhile (the
   service kept accepting uploads), go back to 1 for them; otherwise move every staged vector into its image
   row and record the new encoder as the collection's active one. Readers see the old collection or the new
   one, never a mix.
3. Write the new index file (atomically) from the rows. A running service notices the switch on its next
   request and swaps in the new encoder and index (app/collection/facade.py, app/collection/versions.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import ColumnElement, and_, delete, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.collection.features import store_missing
from app.collection.versions import encoder_spec, read_active, record_active
from app.config import Settings
from app.db import vectors as vectors_codec
from app.db.changes import ENCODER_SWITCH, record_change
from app.db.session import open_database
from app.db.tables import Image, StagedVector, StoredLocalFeatures
from app.encoders import encoder_from_settings
from app.errors import JobError
from app.files.decoding import Skipped
from app.files.locate import path_to_read
from app.files.storage import FileStore
from app.jobs.embed import Embedded
from app.jobs.index_build import build_from_rows, index_file_lock, spec_for_collection
from app.jobs.runner import run_stages
from app.jobs.sources import SourceItem
from models import ImageEncoder

__all__ = ["ReindexError", "ReindexReport", "reindex_collection", "stored_count"]

# Rounds of "stage what arrived meanwhile, then try the swap" before giving up on a collection that never
# stops growing (each round only embeds the images added during the previous one).
_MAX_ROUNDS = 20


class ReindexError(JobError):
    """A re-embedding that cannot go on; the message says what to do."""


@dataclass
class ReindexReport:
    fingerprint: str
    previous: str | None = None
    embedded: int = 0  # vectors made by this run
    reused: int = 0  # vectors staged by an interrupted earlier run
    indexed: int = 0  # images in the new index
    skipped: list[Skipped] = field(default_factory=list)
    switched: bool = False
    seconds: float = 0.0


def reindex_collection(
    settings: Settings, *, on_progress: Callable[[int, int], None] | None = None
) -> ReindexReport:
    started = time.perf_counter()
    encoder = encoder_from_settings(settings)
    target = encoder.fingerprint
    db = open_database(settings.db_url, data_dir=settings.data_dir)
    engine, sessions = db.engine, db.sessions
    try:
        report = ReindexReport(fingerprint=target)
        with sessions.begin() as session:
            active = read_active(session)
            report.previous = active.fingerprint if active is not None else None
            # Vectors staged for another encoder by an abandoned run are of no use now.
            session.execute(delete(StagedVector).where(StagedVector.encoder != target))
            report.reused = int(
                session.scalar(
                    select(func.count()).select_from(StagedVector).where(StagedVector.encoder == target)
                )
                or 0
            )
        for _ in range(_MAX_ROUNDS):
            _stage(settings, encoder, sessions, report, on_progress)
            if report.skipped:
                names = ", ".join(str(s.path) for s in report.skipped[:5])
                raise ReindexError(
                    f"{len(report.skipped)} stored images could not be read ({names}"
                    f"{', …' if len(report.skipped) > 5 else ''}): restore their files or delete them "
                    "(DELETE /images/{id}), then run `cbir reindex` again; what was staged is kept, and the "
                    "collection still uses its previous encoder"
                )
            if _swap(sessions, target, encoder_spec(settings)):
                report.switched = True
                break
        else:
            raise ReindexError(
                f"images kept arriving during {_MAX_ROUNDS} rounds of re-embedding: pause uploads and run "
                "`cbir reindex` again (what was staged is kept)"
            )
        report.indexed = _write_index(sessions, encoder, settings)
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    return report


def stored_count(settings: Settings) -> int:
    """How many images the collection holds (the most a reindex embeds), for a progress bar."""
    engine = open_database(settings.db_url, data_dir=settings.data_dir).engine
    try:
        with Session(engine) as session:
            return int(session.scalar(select(func.count()).select_from(Image)) or 0)
    finally:
        engine.dispose()


def _unstaged(target: str) -> ColumnElement[bool]:
    """Images whose vector is not the target encoder's and has not been staged for it."""
    staged = exists().where(StagedVector.image_id == Image.id, StagedVector.encoder == target)
    return and_(Image.encoder != target, ~staged)


def _stage(
    settings: Settings,
    encoder: ImageEncoder,
    sessions: sessionmaker[Session],
    report: ReindexReport,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    target = encoder.fingerprint
    files = FileStore(settings.images_dir)
    with sessions() as session:
        todo = session.execute(
            select(Image.id, Image.sha256, Image.format, Image.source_path)
            .where(_unstaged(target))
            .order_by(Image.id)
        ).all()
    if not todo:
        return
    with sessions() as session:
        featured = exists().where(StoredLocalFeatures.image_id == Image.id)
        lacking_features = bool(session.scalar(select(exists().where(_unstaged(target), ~featured))))
    paths: list[Path] = []
    id_of: dict[str, int] = {}
    for image_id, sha256, fmt, source_path in todo:
        path = path_to_read(files, sha256, fmt, source_path)
        paths.append(path)
        id_of[str(path.resolve())] = image_id
    done = 0

    def write(embedded: Sequence[Embedded], dropped: int, skipped: Sequence[Skipped]) -> None:
        nonlocal done
        report.skipped.extend(skipped)
        for batch in embedded:
            vectors = batch.vectors()
            with sessions.begin() as session:
                session.add_all(
                    StagedVector(
                        image_id=id_of[item.source_path or ""],
                        encoder=target,
                        vector=vectors_codec.encode(vector),
                    )
                    for item, vector in zip(batch.items, vectors, strict=True)
                )
                # Images stored before their features were (a collection from before) get them now.
                store_missing(
                    session,
                    [
                        (id_of[item.source_path or ""], item.local_features)
                        for item in batch.items
                        if item.local_features is not None
                    ],
                )
            report.embedded += len(batch.items)
        done += dropped + len(skipped) + sum(len(batch.items) for batch in embedded)
        if on_progress is not None:
            on_progress(done, report.embedded)

    run_stages(
        [SourceItem(path) for path in paths],
        encoder,
        write,
        max_pixels=settings.max_pixels,
        gpu_decode=settings.gpu_decode,
        workers=settings.workers,
        local_features=lacking_features,  # no ORB for a collection whose rows all have their features
    )


def _swap(sessions: sessionmaker[Session], target: str, spec: dict[str, object]) -> bool:
    """One transaction: staged vectors into their rows and the new encoder recorded; False if images
    arrived that still need staging (nothing changed then)."""
    with sessions.begin() as session:
        # A write first, so the transaction holds the write lock (and sees the latest commits) before it
        # checks that nothing is left to stage: no upload can commit between that check and the swap.
        session.execute(update(Image).where(Image.id == -1).values(encoder=Image.encoder))
        left = session.scalar(select(func.count()).select_from(Image).where(_unstaged(target))) or 0
        if left:
            return False
        staged_vector = (
            select(StagedVector.vector)
            .where(StagedVector.image_id == Image.id, StagedVector.encoder == target)
            .scalar_subquery()
        )
        staged_ids = select(StagedVector.image_id).where(StagedVector.encoder == target)
        session.execute(
            update(Image).where(Image.id.in_(staged_ids)).values(encoder=target, vector=staged_vector),
            execution_options={"synchronize_session": False},
        )
        record_active(session, target, dict(spec))
        record_change(session, ENCODER_SWITCH)
        session.execute(delete(StagedVector).where(StagedVector.encoder == target))
    return True


def _write_index(sessions: sessionmaker[Session], encoder: ImageEncoder, settings: Settings) -> int:
    """The new encoder's index, of the configured type (app/jobs/index_build.py), from its rows."""
    dim = encoder.dim
    index = build_from_rows(
        sessions, encoder.fingerprint, dim, lambda n: spec_for_collection(settings, n, dim)
    )
    with index_file_lock(settings.index_path):
        index.save(settings.index_path)
    return index.ntotal

"""Backup and restore of a collection: database, vector index and image files, taken while it is in use.

Consistency comes from one point in time, the database snapshot, and everything else is made to agree with it:

1. The database is copied with SQLite's online backup API in a single step, i.e. inside one read
   transaction: a consistent snapshot even while the service or a bulk job commits (WAL lets them go on).
2. Every file a snapshot row names is copied. Files are written before their row is committed, so each row of
   the snapshot has its file, unless the image was deleted after the snapshot: that row is then dropped
   from the backup too, as if the backup had been taken a moment later.
3. The index file on disk may be older or newer than the snapshot (it is saved every N images), so its copy
   is reconciled with the snapshot's rows (stray ids removed, missing vectors added from the rows, which
   hold their vectors) and saved. When it cannot be read, it is rebuilt from the rows.

A backup is written to a temporary folder beside the destination and renamed into place last, so a folder
with a manifest is always complete. No model is loaded: backing up is file and database work only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, delete, event, func, make_url, select, text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import migrate
from app.db import vectors as vectors_codec
from app.db.changes import DELETE, record_change
from app.db.tables import Image
from app.errors import JobError
from app.files.locate import image_file
from app.files.storage import FileStore
from index import IndexFileError, IndexMismatchError, VectorIndex

MANIFEST = "backup.json"
FORMAT = "cbir-backup"
FORMAT_VERSION = 1
DB_NAME = "cbir.db"
INDEX_NAME = "index.faiss"
IMAGES_DIR = "images"
CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]  # (files done, files in all)


class BackupError(JobError):
    """A backup or restore that cannot be made; the message says why."""


@dataclass
class BackupReport:
    destination: Path
    images: int = 0
    files: int = 0
    bytes: int = 0
    deleted_during_backup: int = 0
    # Rows whose file was already missing in the collection itself: kept, and named here.
    missing: dict[int, str] = field(default_factory=dict)
    index: str = ""
    seconds: float = 0.0


@dataclass
class RestoreReport:
    data_dir: Path
    images: int = 0
    files: int = 0
    bytes: int = 0
    created_at: str = ""
    # Rows whose file the backup did not have (missing from the collection when it was taken): kept, named.
    missing: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Row:
    id: int
    sha256: str
    format: str
    source_path: str | None


# -- backup --------------------------------------------------------------------------------------------------
def backup(
    settings: Settings,
    destination: Path,
    *,
    on_snapshot: Callable[[], None] | None = None,
    on_progress: Progress | None = None,
) -> BackupReport:
    """Write a self-contained copy of the collection to ``destination`` (a new or empty folder).

    ``on_snapshot`` runs right after the database snapshot is taken (tests use it to go on writing).
    """
    started = time.perf_counter()
    db_path = sqlite_path(settings, "backup")
    if not db_path.is_file():
        raise BackupError(
            f"there is no collection to back up: {db_path} does not exist (check --data-dir / CBIR_DATA_DIR)"
        )
    destination = destination.expanduser().resolve()
    _require_new_folder(destination, "backup destination", "give a new folder for the backup")
    if destination == settings.data_dir.resolve() or settings.data_dir.resolve() in destination.parents:
        raise BackupError(
            f"the backup destination {destination} is inside the data directory {settings.data_dir}: "
            "choose a folder outside it"
        )
    report = BackupReport(destination)
    with _staging(destination) as staging:
        snapshot = staging / DB_NAME
        _snapshot_database(db_path, snapshot)
        if on_snapshot is not None:
            on_snapshot()
        engine = _plain_engine(snapshot)
        try:
            rows = _rows(engine)
            live = FileStore(settings.images_dir)
            copy = FileStore(staging / IMAGES_DIR)
            gone: list[int] = []
            for done, row in enumerate(rows, 1):
                # Indexed with --no-copy: the backup takes a copy, so it does not depend on the original.
                source = image_file(live, row.sha256, row.format, row.source_path)
                size = None
                if source is not None:
                    size = _copy_verified(source, copy.path_for(row.sha256, row.format), row.sha256)
                if size is not None:
                    report.files += 1
                    report.bytes += size
                elif _deleted_since(db_path, row.id):
                    gone.append(row.id)
                elif source is None:
                    report.missing[row.id] = "its file is missing from the collection"
                else:
                    report.missing[row.id] = f"{source} no longer holds the content it had when indexed"
                if on_progress is not None:
                    on_progress(done, len(rows))
            if gone:
                with Session(engine) as session, session.begin():
                    for start in range(0, len(gone), 500):
                        session.execute(delete(Image).where(Image.id.in_(gone[start : start + 500])))
                    record_change(session, DELETE, gone)
            report.deleted_during_backup = len(gone)
            report.images = len(rows) - len(gone)
            report.index = _write_index(engine, settings.index_path, staging / INDEX_NAME)
            encoders = _encoder_counts(engine)
            revision = _revision(engine)
        finally:
            engine.dispose()
        _compact(snapshot)
        report.bytes += snapshot.stat().st_size
        report.seconds = time.perf_counter() - started
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_data_dir": str(settings.data_dir.resolve()),
            "schema_revision": revision,
            "images": report.images,
            "files": report.files,
            "encoders": encoders,
            "index": report.index,
            "deleted_during_backup": report.deleted_during_backup,
            "missing_files": {str(image_id): why for image_id, why in report.missing.items()},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _snapshot_database(db_path: Path, target: Path) -> None:
    # pages=-1 (the default): the whole database in one step, under one read lock, so the copy is one
    # committed state. Writers in WAL mode are not blocked; busy_timeout covers a checkpoint in progress.
    with (
        contextlib.closing(sqlite3.connect(db_path, timeout=30)) as source,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)


def _rows(engine: Engine) -> list[_Row]:
    with engine.connect() as connection:
        result = connection.execute(
            select(Image.id, Image.sha256, Image.format, Image.source_path).order_by(Image.id)
        )
        return [_Row(int(r.id), r.sha256, r.format, r.source_path) for r in result]


def _deleted_since(db_path: Path, image_id: int) -> bool:
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as connection:
        found = connection.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone()
    return found is None


def _copy_verified(source: Path, target: Path, sha256: str) -> int | None:
    """Copy, hashing on the way; None when the source is gone or no longer holds that content."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as reader, target.open("wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
    except FileNotFoundError:
        target.unlink(missing_ok=True)
        return None
    if digest.hexdigest() != sha256:
        target.unlink(missing_ok=True)
        return None
    return size


def _write_index(engine: Engine, live_index: Path, target: Path) -> str:
    """An index holding exactly the snapshot's vectors; says how it was made (for the manifest)."""
    with engine.connect() as connection:
        encoders = connection.execute(select(Image.encoder).group_by(Image.encoder)).scalars().all()
        if not encoders:
            return "none (empty collection: the service makes an empty index at start)"
        if len(encoders) > 1:
            return (
                f"none (the images come from {len(encoders)} encoders: a `cbir reindex` was in progress; "
                "run `cbir reindex` after restoring)"
            )
        fingerprint = encoders[0]
        blob = connection.execute(select(Image.vector).limit(1)).scalar_one()
        dim = len(blob) // 4
        try:
            index = VectorIndex.load(live_index, dim=dim, fingerprint=fingerprint)
            how = "copied from the service's index and reconciled with the database snapshot"
        except (IndexFileError, IndexMismatchError):
            index = VectorIndex(dim, fingerprint)
            how = "rebuilt from the vectors in the database snapshot"
        wanted = np.fromiter(connection.execute(select(Image.id)).scalars(), dtype=np.int64)
        stray = np.setdiff1d(index.ids(), wanted)
        if len(stray):
            index.remove(stray)
        missing = np.setdiff1d(wanted, index.ids())
        for start in range(0, len(missing), 4096):
            chunk = [int(i) for i in missing[start : start + 4096]]
            found = connection.execute(select(Image.id, Image.vector).where(Image.id.in_(chunk))).all()
            ids = np.array([r.id for r in found], dtype=np.int64)
            index.add(ids, vectors_codec.decode_many([r.vector for r in found], dim))
    index.save(target)
    return how


def _encoder_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(Image.encoder, func.count()).group_by(Image.encoder)).all()
    return {str(encoder): int(count) for encoder, count in rows}


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # an unversioned database: restore applies every migration
            return None


def _compact(db: Path) -> None:
    """One self-contained file: out of WAL mode (no -wal/-shm beside it) and without free pages."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("VACUUM")


# -- restore -------------------------------------------------------------------------------------------------
def restore(source: Path, settings: Settings, *, on_progress: Progress | None = None) -> RestoreReport:
    """Make ``settings.data_dir`` (a new or empty folder) a copy of the backup in ``source``, checked file
    by file against the hashes in the database, with the schema upgraded to this release's."""
    started = time.perf_counter()
    source = source.expanduser().resolve()
    manifest = read_manifest(source)
    target = settings.data_dir.expanduser().resolve()
    db_path = sqlite_path(settings, "restore")
    if db_path.resolve() != target / DB_NAME:
        raise BackupError(
            f"restore writes the database to {target / DB_NAME}, but CBIR_DATABASE_URL points at {db_path}: "
            "unset CBIR_DATABASE_URL for the restore"
        )
    _require_new_folder(target, "data directory", "restore into a new or empty folder (--data-dir)")
    report = RestoreReport(target, created_at=str(manifest.get("created_at", "")))
    with _staging(target) as staging:
        shutil.copyfile(source / DB_NAME, staging / DB_NAME)
        engine = _plain_engine(staging / DB_NAME)
        try:
            _check_integrity(engine, source)
            rows = _rows(engine)
        finally:
            engine.dispose()
        known_missing = manifest.get("missing_files") or {}
        backup_files = FileStore(source / IMAGES_DIR)
        restored = FileStore(staging / IMAGES_DIR)
        for done, row in enumerate(rows, 1):
            origin = backup_files.path_for(row.sha256, row.format)
            if origin.is_file():
                size = _copy_verified(origin, restored.path_for(row.sha256, row.format), row.sha256)
                if size is None:
                    raise BackupError(
                        f"the backup is damaged: {origin} does not match the sha256 in its database row: "
                        "restore from another backup"
                    )
                report.files += 1
                report.bytes += size
            elif str(row.id) in known_missing:
                report.missing[row.id] = f"{known_missing[str(row.id)]} when the backup was taken"
            else:
                raise BackupError(
                    f"the backup is incomplete: the file of image {row.id} ({origin}) is missing; "
                    "restore from another backup"
                )
            if on_progress is not None:
                on_progress(done, len(rows))
        if (source / INDEX_NAME).is_file():
            shutil.copyfile(source / INDEX_NAME, staging / INDEX_NAME)
        upgraded = make_sqlite_engine(staging / DB_NAME)
        try:
            migrate.upgrade(upgraded)
        finally:
            upgraded.dispose()
        report.images = len(rows)
    report.seconds = time.perf_counter() - started
    return report


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not source.is_dir():
        raise BackupError(f"{source} is not a folder: give the folder that `cbir backup` wrote")
    if not path.is_file():
        raise BackupError(
            f"{source} is not a cbir backup (it has no {MANIFEST}; an interrupted backup never gets one): "
            "give the folder that `cbir backup` wrote"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is damaged ({exc}): restore from another backup") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{path} is format {manifest.get('format')!r} version {manifest.get('format_version')!r}; this "
            f"release restores {FORMAT!r} version {FORMAT_VERSION}"
        )
    if not (source / DB_NAME).is_file():
        raise BackupError(f"the backup is incomplete: {source / DB_NAME} is missing")
    return manifest


def _check_integrity(engine: Engine, source: Path) -> None:
    with engine.connect() as connection:
        try:
            verdict = connection.execute(text("PRAGMA quick_check")).scalar()
        except Exception as exc:
            raise BackupError(f"{source / DB_NAME} is not a readable SQLite database: {exc}") from exc
    if verdict != "ok":
        raise BackupError(f"{source / DB_NAME} is damaged ({verdict}): restore from another backup")


# -- shared helpers ------------------------------------------------------------------------------------------
def sqlite_path(settings: Settings, command: str) -> Path:
    from app.db.session import sqlite_file

    path = sqlite_file(settings.db_url)
    if path is None:
        raise BackupError(
            f"`cbir {command}` handles the SQLite database only, and this collection uses "
            f"{make_url(settings.db_url).render_as_string(hide_password=True)}: use that database's own "
            "tools (pg_dump) for it"
        )
    return path


def make_sqlite_engine(path: Path) -> Engine:
    from app.db.session import make_engine

    return make_engine(f"sqlite:///{path}")


def _plain_engine(path: Path) -> Engine:
    # No WAL pragma: the copy is private to this process and must stay a single file. Foreign keys on, so
    # a row dropped from the copy takes its local features and staged vectors with it.
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", lambda connection, _record: connection.execute("PRAGMA foreign_keys=ON"))
    return engine


def _require_new_folder(path: Path, what: str, hint: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"the {what} {path} already exists and is not empty: {hint}")


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final``, renamed onto it when the block succeeds, removed otherwise."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield staging
        _fsync_tree(staging)
        if final.exists():
            final.rmdir()  # empty (checked): rename cannot replace a folder
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""Engines and sessions, created on demand (never at import time) so each app or test owns its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets searches read while the bulk job writes; busy_timeout waits for a writer instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for a server database (or SQLite in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@dataclass
class Database:
    """An open database: its engine and its session factory, closed together."""

    engine: Engine
    sessions: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_database(url: str, *, data_dir: Path | None = None, upgrade: bool = True) -> Database:
    """The one way every command, job and the service open the database.

    data_dir is created first (SQLite's file lives there); ``upgrade`` applies pending migrations, and
    without it callers that must not change the schema check ``migrate.pending(db.engine)`` themselves.
    """
    from app.db import migrate  # alembic: only once a database is really opened

    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    if upgrade:
        try:
            migrate.upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
    return Database(engine, make_session_factory(engine))

"""The schema is owned by Alembic: an empty database upgrades to head and matches the models exactly."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from app.db import migrate
from app.db.session import make_engine
from app.db.tables import Base


def test_upgrade_empty_database_to_head_matches_models(tmp_path: Path, database_url: str | None) -> None:
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'cbir.db'}")
    assert migrate.pending(engine)  # a new database needs every revision
    migrate.upgrade(engine)
    assert migrate.pending(engine) == []
    assert {"images", "api_keys"} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    migrate.upgrade(engine)  # idempotent
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cbir.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def _insert_image(connection: Connection, digest: str) -> int:
    """A row as any revision since 0001 accepts it; returns its id."""
    result = connection.execute(
        text(
            "INSERT INTO images (sha256, original_name, width, height, size_bytes, format, created_at, "
            "metadata, encoder, vector) VALUES (:d, 'x.png', 1, 1, 1, 'png', '2026-01-01 00:00:00', '{}', "
            "'enc', :v) RETURNING id"
        ),
        {"d": digest, "v": b"\0\0\0\0"},
    )
    return int(result.scalar_one())


def test_ids_are_never_reused_after_upgrading_a_0003_collection(
    tmp_path: Path, database_url: str | None
) -> None:
    """A collection made before the migration keeps its rows and ids, and a deleted id is never handed out
    again (before it, SQLite gave a new row the deleted largest id)."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'cbir.db'}")
    migrate.upgrade(engine, "0003")
    with engine.begin() as connection:
        ids = [_insert_image(connection, f"{n:064x}") for n in range(1, 4)]
        connection.execute(
            text("INSERT INTO staged_vectors (image_id, encoder, vector) VALUES (:i, 'next', :v)"),
            {"i": ids[0], "v": b"\1\0\0\0"},
        )
    migrate.upgrade(engine)
    with engine.begin() as connection:
        kept = [row[0] for row in connection.execute(text("SELECT id FROM images ORDER BY id"))]
        staged = connection.execute(text("SELECT image_id FROM staged_vectors")).scalars().all()
        connection.execute(text("DELETE FROM images WHERE id = :i"), {"i": max(ids)})
        fresh = _insert_image(connection, f"{99:064x}")
    assert kept == ids
    assert staged == [ids[0]]  # the table copy did not cascade-delete a reindex in progress
    assert fresh > max(ids)
    engine.dispose()

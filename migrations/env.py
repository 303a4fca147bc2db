"""Alembic environment: the schema comes from app.db.tables, the URL from the caller's config or settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.config import Settings
from app.db.session import make_engine
from app.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().db_url


def _configure(connection: Connection | None = None) -> None:
    # render_as_batch: SQLite can only ALTER through table copies; batch mode does that for us.
    options = {"target_metadata": target_metadata, "render_as_batch": True, "compare_type": True}
    if connection is None:
        context.configure(url=_url(), literal_binds=True, **options)
    else:
        context.configure(connection=connection, **options)


def run_migrations_offline() -> None:
    _configure()
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""The collection's database alone, without its model or its vector index.

The commands that only read or edit rows (`cbir images list/show/update/export`, `cbir keys`, `cbir db
upgrade`) open this, so they start in a fraction of a second and never import torch
(tests/app/test_cli_startup.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement

from app.collection.catalog import RowStore
from app.collection.presence import require_collection
from app.config import Settings
from app.db.session import open_database
from app.db.tables import Image
from app.errors import JobError


def open_rows(settings: Settings, *, existing: bool = True, upgrade: bool = False) -> RowStore:
    """``existing``: refuse a collection that is not there (rather than create one where a mistyped
    --data-dir points); ``upgrade``: apply pending migrations, else refuse a database that needs them."""
    from app.db import migrate  # alembic: only once a database is really opened

    if existing:
        require_collection(settings)
    db = open_database(settings.db_url, data_dir=settings.data_dir if upgrade else None, upgrade=upgrade)
    missing = [] if upgrade else migrate.pending(db.engine)
    if missing:
        db.close()
        raise JobError(f"the database needs migrations {missing}: run `cbir db upgrade`")
    return RowStore(db.engine, db.sessions)


def upgrade_schema(settings: Settings) -> list[str]:
    """Apply the pending migrations; returns them, oldest first."""
    from app.db import migrate

    with open_database(settings.db_url, data_dir=settings.data_dir, upgrade=False) as db:
        todo = migrate.pending(db.engine)
        migrate.upgrade(db.engine)
    return todo


def with_ids(ids: Iterable[int]) -> ColumnElement[bool]:
    """The rows of these ids, as a condition for `Collection.delete_where`."""
    return Image.id.in_(list(ids))

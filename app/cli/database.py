"""`cbir db`: the database schema, migrated on demand (the service and the jobs migrate on start too)."""

from __future__ import annotations

from app.cli.options import DATABASE, command, group
from app.cli.render import console
from app.config import Settings

db_app = group("Database schema.")


@command(db_app, DATABASE, name="upgrade")
def db_upgrade(settings: Settings) -> None:
    """Apply pending migrations to the database."""
    from app.collection.rows import upgrade_schema

    todo = upgrade_schema(settings)
    console.print(f"database at {settings.db_url}: applied {len(todo)} migration(s) {todo}; now at head")

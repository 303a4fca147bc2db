"""ids never reused (SQLite AUTOINCREMENT) and the change feed

Revision ID: 20261201_change_feed
Revises: 0003
Create Date: 2026-12-01 21:10:00

SQLite hands a deleted row's id out again unless the table is AUTOINCREMENT, which only a table copy can
add: the batch recreate keeps every row and its id (``INSERT ... SELECT``), and SQLite sets the table's
sequence to the largest id copied. PostgreSQL's images.id is a SERIAL (a sequence), which never goes back.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261201_change_feed"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate_images(autoincrement: bool) -> None:
    # With foreign_keys=ON, dropping the old images table would cascade-delete staged_vectors (a reindex in
    # progress): keep them aside and put them back.
    op.execute("CREATE TEMP TABLE _cbir_staged AS SELECT * FROM staged_vectors")
    with op.batch_alter_table(
        "images", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    op.execute("DELETE FROM staged_vectors")
    op.execute("INSERT INTO staged_vectors SELECT * FROM _cbir_staged")
    op.execute("DROP TABLE _cbir_staged")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate_images(True)
    op.create_table(
        "changes",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_changes")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("changes")
    if op.get_bind().dialect.name == "sqlite":
        _recreate_images(False)

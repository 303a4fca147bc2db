"""local features stored with each image

Revision ID: 20261202_local_features
Revises: 20261201_change_feed
Create Date: 2026-12-02 04:40:00

Existing images get no rows here: the service derives an image's features from its file at its first
verification and stores them then (app/collection/features.py), so the upgrade needs no image decoding.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261202_local_features"
down_revision: str | None = "20261201_change_feed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "local_features",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_local_features_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_local_features")),
    )


def downgrade() -> None:
    op.drop_table("local_features")

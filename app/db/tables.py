"""The database schema, as typed SQLAlchemy 2 models.

The database is the source of truth: every image's row also holds the vector it was indexed with, so the
FAISS index can always be rebuilt or repaired from it without re-embedding. The schema changes only through
Alembic migrations (``migrations/``); a test checks that autogenerate finds no difference with these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, ForeignKey, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# A naming convention makes constraint names deterministic, which SQLite batch migrations need.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend: SQLite keeps no offset and hands back naive values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (UTC)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Image(Base):
    """An image. Its id is never handed out twice (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so a
    client's cached copy or another process's index entry under an id always means the same picture."""

    __tablename__ = "images"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    original_name: Mapped[str] = mapped_column(String(1024))
    source_path: Mapped[str | None] = mapped_column(Text, default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    encoder: Mapped[str] = mapped_column(String(256), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKey(Base):
    """An API key, stored as the SHA-256 of its secret (256 random bits: a slow hash would add nothing)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class EncoderState(Base):
    """Which encoder made the collection's vectors and the settings that rebuild it (one row, "active").

    A running service reads it before every search: when `cbir reindex` has switched the collection to
    another encoder, the service rebuilds that encoder from ``spec`` and swaps it in.
    """

    __tablename__ = "encoder_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(256))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)


class StagedVector(Base):
    """A vector that `cbir reindex` made with the encoder it is switching to, kept until the swap."""

    __tablename__ = "staged_vectors"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    encoder: Mapped[str] = mapped_column(String(256), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class StoredLocalFeatures(Base):
    """An image's local features for geometric verification (models/local_features.py, its byte form).

    Derived from the file, and written in the transaction that inserts the image, so verifying a query's
    candidates reads their rows (one query) instead of decoding ten files: that made a query with a cold
    feature cache 4.3 times dearer than one without verification (bench/query_cost.py, issue 13). Rows
    without features (collections from before, JPEGs decoded on the GPU) get them at their first
    verification. Deleted with the image.
    """

    __tablename__ = "local_features"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Change(Base):
    """One change to the collection, written in the transaction that makes it: the change feed.

    Processes that hold vectors (each service's FAISS copy) replay the entries after the last ``seq`` they
    applied before they answer a search (app/collection/following.py); ``seq`` is in commit order
    (AUTOINCREMENT on SQLite, whose writers are serialised; on PostgreSQL writers take a transaction-scoped
    advisory lock before they append, so no entry becomes visible after a later one).
    """

    __tablename__ = "changes"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    op: Mapped[str] = mapped_column(String(16))
    image_id: Mapped[int | None] = mapped_column(Integer, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

"""API keys: created once and shown once, stored only as a hash, revocable.

Keys are 256 random bits, so a fast hash (SHA-256) is as safe as a slow one and keeps every request cheap.
Roles are ordered: admin may do what write may, write what read may.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import ApiKey

KEY_PREFIX = "cbir_"


class Role(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(sessions: sessionmaker[Session], name: str, role: Role) -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=secret[:12], key_hash=hash_key(secret), role=role.value)
    with sessions.begin() as session:
        session.add(row)
    return NewKey(row, secret)


def list_keys(sessions: sessionmaker[Session]) -> list[ApiKey]:
    with sessions() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(sessions: sessionmaker[Session], key_id: int) -> ApiKey | None:
    with sessions.begin() as session:
        row = session.get(ApiKey, key_id)
        if row is not None and row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
        return row


def any_active(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def role_of(sessions: sessionmaker[Session], secret: str) -> Role | None:
    """The role of an active key, or None for an unknown or revoked one."""
    with sessions() as session:
        row = session.scalar(
            select(ApiKey).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))
        )
    return Role(row.role) if row is not None else None

"""Encoder versions: which encoder made a collection's vectors, and how a running service follows a switch.

The database records the active encoder (table encoder_state): its fingerprint, and the settings that build
it (its "spec": backbone, head, weights, max side, scales, fitted file, or an autoencoder). A service
configured with another encoder is refused until `cbir reindex` re-embeds the stored images and switches the
record, in the same transaction as the vectors. A service that is running when that happens notices on its
next request (one primary-key read), builds the new encoder from the spec in the background while it keeps
answering from the old encoder and index, then swaps both in at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import EncoderState

__all__ = ["ACTIVE", "Active", "encoder_spec", "read_active", "record_active", "settings_for"]

ACTIVE = "active"

# The settings that decide which vectors an encoder makes (the rest, e.g. device or batch size, do not).
SPEC_FIELDS = ("encoder", "backbone", "head", "weights", "max_side", "scales", "fitted")
_PATH_FIELDS = ("weights", "fitted")
# Runtimes whose vectors differ from fp32 beyond models.runtimes.FP32_TOLERANCE (a fingerprint tag): the
# spec records them, the others (auto, torch, OpenVINO fp32/bf16...) make the same collection's vectors.
FINGERPRINT_RUNTIMES = ("openvino_int8",)


@dataclass(frozen=True)
class Active:
    fingerprint: str
    spec: dict[str, Any]

    def describe(self) -> str:
        """The settings that rebuild it, as a user would write them."""
        parts = [f"{key}={value}" for key, value in self.spec.items() if value is not None]
        return ", ".join(parts)


def encoder_spec(settings: Settings) -> dict[str, Any]:
    """JSON-safe settings that rebuild the configured encoder; paths are made absolute."""
    spec: dict[str, Any] = {}
    for name in SPEC_FIELDS:
        value = getattr(settings, name, None)
        if isinstance(value, Path):
            value = str(value.expanduser().resolve())
        spec[name] = value
    if settings.runtime in FINGERPRINT_RUNTIMES:
        spec["runtime"] = settings.runtime
    return spec


def settings_for(settings: Settings, spec: dict[str, Any]) -> Settings:
    """`settings` with the encoder of `spec` (everything else, e.g. device and data dir, kept)."""
    update: dict[str, Any] = {}
    for name in SPEC_FIELDS:
        if name not in spec or name not in Settings.model_fields:
            continue
        value = spec[name]
        update[name] = Path(value) if name in _PATH_FIELDS and value is not None else value
    if spec.get("runtime") in FINGERPRINT_RUNTIMES:
        update["runtime"] = spec["runtime"]
    elif settings.runtime in FINGERPRINT_RUNTIMES:  # the recorded encoder is an fp32-compatible one
        update["runtime"] = "auto"
    return settings.model_copy(update=update)


def read_active(session: Session) -> Active | None:
    row = session.get(EncoderState, ACTIVE)
    return Active(row.fingerprint, dict(row.spec)) if row is not None else None


def read_active_fingerprint(engine: Engine) -> str | None:
    """The cheap read a service does before each search."""
    with Session(engine) as session:
        return session.scalar(select(EncoderState.fingerprint).where(EncoderState.name == ACTIVE))


def record_active(session: Session, fingerprint: str, spec: dict[str, Any]) -> None:
    """Set the active encoder inside the caller's transaction."""
    row = session.get(EncoderState, ACTIVE)
    if row is None:
        session.add(EncoderState(name=ACTIVE, fingerprint=fingerprint, spec=spec))
    else:
        row.fingerprint, row.spec = fingerprint, spec


def ensure_active(engine: Engine, fingerprint: str, spec: dict[str, Any]) -> Active:
    """The recorded encoder; this one is recorded first if the collection has none yet (new or older)."""
    with Session(engine) as session:
        found = read_active(session)
    if found is not None:
        return found
    try:
        with Session(engine) as session, session.begin():
            record_active(session, fingerprint, spec)
    except IntegrityError:
        pass  # another process recorded one first: theirs stands
    with Session(engine) as session:
        found = read_active(session)
    assert found is not None
    return found

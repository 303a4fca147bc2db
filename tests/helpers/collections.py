"""Opening a collection the way the service does, for the tests of the services."""

from __future__ import annotations

from app.collection.facade import Collection
from app.config import Settings
from app.encoders import encoder_from_settings


def open_collection(settings: Settings) -> Collection:
    return Collection.open(settings, encoder_from_settings(settings))

"""What the commands open: the collection with its configured encoder (loading the model), for the commands
that embed or search."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.config import Settings

if TYPE_CHECKING:  # the collection imports models (torch): only the commands that need a model do
    from app.collection.facade import Collection


def open_collection(settings: Settings, *, existing: bool = False) -> Collection:
    """``existing``: refuse (rather than create) a collection that is not there, for the reading commands."""
    from app.collection.facade import Collection, require_collection
    from app.encoders import encoder_from_settings

    if existing:
        require_collection(settings)
    return Collection.open(settings, encoder_from_settings(settings))

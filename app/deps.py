"""Dependencies injected into routes: the collection that the app's lifespan opened."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.collection.facade import Collection
from app.config import Settings
from app.errors import NotReadyError


def get_collection(request: Request) -> Collection:
    collection: Collection | None = getattr(request.app.state, "collection", None)
    if collection is None:
        raise NotReadyError("the model and index are still loading; retry in a moment")
    return collection


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CollectionDep = Annotated[Collection, Depends(get_collection)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

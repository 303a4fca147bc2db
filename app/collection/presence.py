"""Whether a collection exists where the settings point, without opening it (nor loading a model)."""

from __future__ import annotations

from app.config import Settings
from app.db.session import sqlite_file
from app.errors import JobError


def require_collection(settings: Settings) -> None:
    """Commands that only read must not create an empty collection where a mistyped --data-dir points."""
    path = sqlite_file(settings.db_url)
    if path is None:
        return  # a server database: opening it creates nothing on disk
    if not path.is_file():
        raise JobError(
            f"there is no collection at {settings.data_dir}: {path} does not exist; check --data-dir "
            "/ CBIR_DATA_DIR (or add images first with `cbir index`)"
        )

"""Where an image's file is: the collection's own copy, else the file it was indexed from.

A job run with ``--no-copy`` stores no copy, only the indexed path; a copy can also be lost (a disk
restored without the images folder). Every reader of stored images (serving the file, backup, export,
reindex, fitting) asks here, so they agree on which file an image is.
"""

from __future__ import annotations

from pathlib import Path

from app.files.storage import FileStore

__all__ = ["image_file", "looked_at", "path_to_read"]


def looked_at(files: FileStore, sha256: str, fmt: str, source_path: str | None) -> list[Path]:
    """The places an image's file may be, in the order they are tried."""
    stored = files.path_for(sha256, fmt)
    return [stored, Path(source_path)] if source_path else [stored]


def image_file(files: FileStore, sha256: str, fmt: str, source_path: str | None) -> Path | None:
    """The stored copy, else the indexed source file; None when neither is there."""
    return next((path for path in looked_at(files, sha256, fmt, source_path) if path.is_file()), None)


def path_to_read(files: FileStore, sha256: str, fmt: str, source_path: str | None) -> Path:
    """The image's file, or when it is missing the last place looked, so a reader's "cannot read" names
    the path a person would check."""
    found = image_file(files, sha256, fmt, source_path)
    return found if found is not None else looked_at(files, sha256, fmt, source_path)[-1]

"""Decoding images for the encoder, shared by uploads, queries and the jobs' reader (app/jobs/reader.py).

Every path that turns bytes into a vector goes through here, so the service, `cbir index` and
`cbir evaluate` embed an image identically.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.errors import InvalidImageError, PayloadTooLargeError
from models import DecodedImage, ImageDecodeError, ImageTooLargeError, decode_image

# A bulk-job file above this is skipped unread: no photo is this large, and reading it would stall a worker.
MAX_FILE_BYTES = 512 * 1024 * 1024


class Storable(Protocol):
    """What the collection stores of an image besides its vector (an app/jobs/records.ImageRecord)."""

    @property
    def sha256(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def original_name(self) -> str: ...
    @property
    def source_path(self) -> str | None: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def local_features(self) -> bytes | None: ...


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str
    duplicate: bool = False


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_or_raise(data: bytes, *, max_side: int, max_pixels: int) -> DecodedImage:
    """Decode bytes from a client, turning decoder errors into the HTTP-mapped domain errors."""
    try:
        return decode_image(data, max_side=max_side, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from exc
    except ImageDecodeError as exc:
        raise InvalidImageError(str(exc)) from exc


def list_files(root: Path) -> list[Path]:
    """Every regular file below root, recursively, in a stable order (so reruns walk the same sequence)."""
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames) if not name.startswith("."))
    return found

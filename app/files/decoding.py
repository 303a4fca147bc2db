"""Reading and decoding images for the encoder, shared by uploads, queries, the bulk job and evaluation.

Every path that turns bytes into a vector goes through here, so the service, `cbir index` and
`cbir evaluate` embed an image identically.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.errors import InvalidImageError, PayloadTooLargeError
from models import DecodedImage, ImageDecodeError, ImageTooLargeError, decode_image

# A bulk-job file above this is skipped unread: no photo is this large, and reading it would stall a worker.
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass
class Prepared:
    """An image decoded, resized for the encoder, and ready to be embedded and stored."""

    sha256: str
    data: bytes
    decoded: DecodedImage
    original_name: str
    source_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.decoded.width

    @property
    def height(self) -> int:
        return self.decoded.height

    @property
    def format(self) -> str:
        return self.decoded.format


class Storable(Protocol):
    """What the collection stores of an image besides its vector (a Prepared, or a bulk job's Loaded)."""

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


@dataclass
class StoredItem:
    """A Storable from plain values: a Ray worker's result, or an imported record with its file's bytes."""

    sha256: str
    data: bytes
    width: int
    height: int
    format: str
    original_name: str
    source_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


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


def _load(path: Path, max_side: int, max_pixels: int, known: Callable[[str], bool]) -> Prepared | Skipped:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Skipped(path, f"file is {size} bytes, above the {MAX_FILE_BYTES} byte limit")
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}")
    digest = sha256_of(data)
    if known(digest):
        return Skipped(path, "duplicate of an image already in the collection", duplicate=True)
    try:
        decoded = decode_image(data, max_side=max_side, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return Skipped(path, str(exc))
    return Prepared(digest, data, decoded, original_name=path.name, source_path=str(path.resolve()))


def load_files(
    paths: Iterable[Path],
    *,
    max_side: int,
    max_pixels: int,
    workers: int,
    known: Callable[[str], bool] = lambda _digest: False,
    lookahead: int = 256,
) -> Iterator[Prepared | Skipped]:
    """Read, hash and decode files in a thread pool, yielding results in input order.

    PIL and hashlib release the GIL while they work, so threads overlap decoding with the model's forward
    pass running in the caller; a bounded window of pending futures keeps memory flat on huge folders.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cbir-decode") as pool:
        pending: deque[Future[Prepared | Skipped]] = deque()
        for path in paths:
            pending.append(pool.submit(_load, path, max_side, max_pixels, known))
            if len(pending) >= lookahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

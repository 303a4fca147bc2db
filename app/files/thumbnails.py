"""Thumbnails: made once per (image content, size), kept on disk, served with a strong ETag.

A results grid asks for dozens of images at once; sending the originals (megabytes each) would make the page
slow and the server busy re-reading them. Sizes are a short fixed list, so the cache on disk is bounded by
the collection (at most one file per size per image) and nobody can fill the disk by asking for every width.
Files are keyed by the content's sha256, not the row id: ids can be reused after a delete, content cannot.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from app.config import Settings
from app.errors import InvalidImageError, InvalidThumbnailSizeError
from models import ImageDecodeError, decode_image

SIZES = (64, 128, 256, 512)
DEFAULT_SIZE = 256
# Part of every file name and ETag: changing how thumbnails are made must not serve the old ones.
THUMBNAIL_VERSION = 1
JPEG_QUALITY = 82


def check_size(size: int) -> int:
    if size not in SIZES:
        raise InvalidThumbnailSizeError(
            f"thumbnail size {size} is not offered: use one of {', '.join(map(str, SIZES))} "
            "(the long side in pixels)"
        )
    return size


def etag(sha256: str, size: int) -> str:
    return f'"{sha256}-{size}-v{THUMBNAIL_VERSION}"'


class Thumbnails:
    @classmethod
    def for_settings(cls, settings: Settings) -> Thumbnails:
        return cls(settings.data_dir / "thumbnails", settings.max_pixels)

    def __init__(self, root: Path, max_pixels: int) -> None:
        self.root = root
        self.max_pixels = max_pixels

    def path_for(self, sha256: str, size: int) -> Path:
        return self.root / sha256[:2] / f"{sha256}-{size}-v{THUMBNAIL_VERSION}.jpg"

    def get(self, sha256: str, size: int, source: Path, long_side: int) -> Path:
        """The cached thumbnail, made first if needed. Never larger than the original (``long_side``)."""
        target = self.path_for(sha256, check_size(size))
        if target.exists():
            return target
        try:
            decoded = decode_image(
                source.read_bytes(), max_side=min(size, max(long_side, 1)), max_pixels=self.max_pixels
            )
        except ImageDecodeError as exc:
            raise InvalidImageError(f"cannot make a thumbnail of {source.name}: {exc}") from exc
        buffer = io.BytesIO()
        decoded.image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        _write_atomic(target, buffer.getvalue())
        return target

    def drop(self, sha256: str) -> None:
        """Forget every size of one image (after it is deleted from the collection)."""
        folder = self.root / sha256[:2]
        if folder.is_dir():
            for path in folder.glob(f"{sha256}-*"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _write_atomic(target: Path, data: bytes) -> None:
    """Two requests for the same new thumbnail may both make it; each renames a complete file into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

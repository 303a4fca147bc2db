"""Content-addressed file store: an image lives at images/ab/cd/<sha256>.<ext>, written atomically.

Content addressing makes a re-upload or an interrupted-then-rerun bulk job write the same file again
harmlessly, and lets two rows never share or clobber a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A file younger than this may belong to a row another process is about to commit.
ORPHAN_MIN_AGE_S = 600.0
# Temporary files carry their writer's pid, so those of a dead writer can go at once, whatever their age.
TEMP_PREFIX = ".tmp-"


def _writer_is_gone(name: str) -> bool:
    pid_text = name[len(TEMP_PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "AVIF": "avif"}
EXTENSIONS |= {"BMP": "bmp", "TIFF": "tif", "PPM": "ppm"}
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # phones' multi-picture JPEG: any JPEG reader shows its first picture
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "PPM": "image/x-portable-pixmap",
}


def media_type(fmt: str) -> str:
    return MEDIA_TYPES.get(fmt.upper(), "application/octet-stream")


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str, fmt: str) -> Path:
        ext = EXTENSIONS.get(fmt.upper(), fmt.lower() or "bin")
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}.{ext}"

    def write(self, sha256: str, fmt: str, data: bytes) -> Path:
        target = self.path_for(sha256, fmt)
        if target.exists() and target.stat().st_size == len(data):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target

    def delete(self, sha256: str, fmt: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_for(sha256, fmt).unlink()

    def sweep(self, keep: Callable[[str], bool], min_age_s: float = ORPHAN_MIN_AGE_S) -> list[Path]:
        """Remove files no row owns (a crash between file write and commit) and leftover temporary files.

        Only files older than ``min_age_s`` go: a bulk job in another process writes its files moments
        before it commits their rows, and those must not be taken for orphans.
        """
        if not self.root.is_dir():
            return []
        cutoff = time.time() - min_age_s
        removed: list[Path] = []
        for path in self.root.rglob("*"):
            if not path.is_file():
                continue
            if path.name.startswith(TEMP_PREFIX):
                stale = _writer_is_gone(path.name) or path.stat().st_mtime < cutoff
            else:
                stale = path.stat().st_mtime < cutoff and not keep(path.stem)
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path)
        return removed

"""One record per image through the jobs: what the reader made of a file, and what the collection stores.

The bulk job, the Ray job, `cbir reindex`, `cbir import`, the learning commands and an upload all carry an
image as this one type, so a field added here (or a rule about one) is seen by every path at once. It is a
plain dataclass because it crosses process boundaries: the bulk job's loader workers and Ray's actors
pickle it back to the process that writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models import DecodedImage

__all__ = ["ImageRecord"]


@dataclass
class ImageRecord:
    """A file read and hashed, with what the collection stores of it besides its vector.

    How far it was decoded depends on the reader's flavour: ``picture`` holds the decoded image for the
    callers that embed pictures (uploads, learning, the thread reader); the process reader sends pixels
    beside it instead, and ``on_device`` marks JPEG bytes left for the GPU's decoder.
    """

    sha256: str
    data: bytes
    width: int  # of the original, after EXIF orientation (what the row stores)
    height: int
    format: str
    original_name: str
    source_path: str | None = None  # the file indexed (resolved); None for uploads
    meta: dict[str, Any] = field(default_factory=dict)
    orientation: int = 1  # EXIF orientation, applied on the device when on_device
    on_device: bool = False
    picture: DecodedImage | None = None
    # models/local_features.py's byte form, stored with the row (None: derived at the first verification)
    local_features: bytes | None = None

    @classmethod
    def of_picture(
        cls,
        sha256: str,
        data: bytes,
        picture: DecodedImage,
        *,
        name: str,
        source_path: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ImageRecord:
        return cls(
            sha256,
            data,
            picture.width,
            picture.height,
            picture.format,
            name,
            source_path,
            dict(meta or {}),
            picture=picture,
        )

    @property
    def decoded(self) -> DecodedImage:
        """The decoded picture; only readers asked for pictures keep it (see the class docstring)."""
        if self.picture is None:
            raise ValueError(
                f"{self.original_name} was read as pixels, not as a picture: read it with load_files "
                "(app/jobs/reader.py) to embed its picture"
            )
        return self.picture

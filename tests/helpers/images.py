"""Pictures made on the fly: distinct per seed, in any format, and hostile headers (decompression bombs)."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image


def photo(size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    """Smooth random colour blobs: compresses like a photo, and differs per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: str, **save_kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def image_bytes(seed: int, size: tuple[int, int] = (96, 64), fmt: str = "JPEG") -> bytes:
    """A distinct, structured test image (`photo`) as file bytes."""
    return encode(photo(size, seed), fmt)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds (almost) no pixel data: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )

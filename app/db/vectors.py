"""The one encoding of a vector in the database: little-endian float32 bytes.

Fixed byte order, so a SQLite file or a PostgreSQL dump holds the same bytes on any machine; many rows
decode with one join and one ``frombuffer``, which is what index builds, the change feed and backups do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DTYPE = "<f4"


def encode(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=DTYPE).tobytes()


def decode(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=DTYPE).astype(np.float32)


def decode_many(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Rows' vectors as one (n, dim) float32 array."""
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), dim).astype(np.float32)

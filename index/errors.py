"""Exceptions raised by the vector index.

They derive from ``RuntimeError`` rather than ``ValueError`` because they describe the state of a file on
disk, not a bad argument: the app maps them to "the service cannot start / run `cbir reindex`", whereas a
``ValueError`` from ``VectorIndex.add``/``search`` is a caller bug or a bad request.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["IndexFileError", "IndexMismatchError", "VectorIndexError"]


class VectorIndexError(RuntimeError):
    """Base class, so the app can catch every index problem with one ``except``."""


class IndexMismatchError(VectorIndexError):
    """A readable index file whose vectors came from another encoder or dimension.

    The fields are kept as attributes so the CLI and the health endpoint can report them without parsing the
    message.
    """

    def __init__(
        self,
        path: Path,
        *,
        stored_fingerprint: str,
        stored_dim: int,
        expected_fingerprint: str,
        expected_dim: int,
    ) -> None:
        self.path = path
        self.stored_fingerprint = stored_fingerprint
        self.stored_dim = stored_dim
        self.expected_fingerprint = expected_fingerprint
        self.expected_dim = expected_dim
        super().__init__(
            f"index at {path} was built by encoder {stored_fingerprint!r} (dim {stored_dim}); "
            f"the service is configured with encoder {expected_fingerprint!r} (dim {expected_dim}): "
            "run `cbir reindex` to re-embed the collection with the configured encoder, "
            "or configure the encoder the index was built with"
        )


class IndexFileError(VectorIndexError):
    """The file cannot be used at all: unreadable, truncated, corrupt, not ours, or another format version.

    Carries the path separately because the message alone is awkward to act on programmatically.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"index at {path} cannot be loaded: {reason}; "
            "rebuild it from the database with `cbir index-build` (or restore it from a backup)"
        )

"""Vector storage: FAISS behind a small, thread-safe, checked API.

Takes and returns float32 numpy arrays and int64 ids only, so that it knows nothing of torch, HTTP or SQL.
"""

from index.errors import IndexFileError, IndexMismatchError, VectorIndexError
from index.store import FORMAT_VERSION, VectorIndex

__all__ = ["FORMAT_VERSION", "IndexFileError", "IndexMismatchError", "VectorIndex", "VectorIndexError"]

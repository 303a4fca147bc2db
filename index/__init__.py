"""Vector storage: FAISS behind a small, thread-safe, checked API.

Takes and returns float32 numpy arrays and int64 ids only, so that it knows nothing of torch, HTTP or SQL.
"""

from index.errors import IndexFileError, IndexMismatchError, VectorIndexError
from index.factory import AUTO, INDEX_TYPES, IndexSpec
from index.store import FORMAT_VERSION, SearchParams, VectorIndex

__all__ = [
    "AUTO",
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "IndexFileError",
    "IndexMismatchError",
    "IndexSpec",
    "SearchParams",
    "VectorIndex",
    "VectorIndexError",
]

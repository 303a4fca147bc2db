"""Vector storage: stores registered by name behind one protocol (index/base.py): FAISS, Milvus.

Takes and returns float32 numpy arrays and int64 ids only, so that it knows nothing of torch, HTTP or SQL.
"""

from index import milvus  # noqa: F401  (imported for its store registration)
from index.base import VectorStore, available_stores, build_store, register_store
from index.errors import IndexFileError, IndexMismatchError, VectorIndexError
from index.factory import AUTO, INDEX_TYPES, IndexSpec
from index.faiss import store as _faiss_store  # noqa: F401  (imported for its store registration)
from index.faiss.types import INDEX_TYPE_REGISTRY, IndexType, index_type, register_index_type
from index.milvus import StoreUnavailableError
from index.store import FORMAT_VERSION, SearchParams, VectorIndex

__all__ = [
    "AUTO",
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "INDEX_TYPE_REGISTRY",
    "IndexFileError",
    "IndexMismatchError",
    "IndexSpec",
    "IndexType",
    "SearchParams",
    "StoreUnavailableError",
    "VectorIndex",
    "VectorIndexError",
    "VectorStore",
    "available_stores",
    "build_store",
    "index_type",
    "register_index_type",
    "register_store",
]

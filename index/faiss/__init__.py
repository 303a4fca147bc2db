"""The embedded FAISS store: the index types (types.py) and the ``faiss`` store registration (store.py).

The index itself, its file format and its tombstones are VectorIndex in index/store.py.
"""

"""Managing the collection's rows: listing with cursors, filtering to ids, merge-patching metadata.

Listing pages by id (``WHERE id > after ORDER BY id LIMIT n``, or the reverse for newest first): a cursor
stays right while images are added or deleted meanwhile, which an offset does not (a deletion on an earlier
page would skip a row), and each page costs one primary-key range scan however deep it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import ColumnElement, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.collection.filters import where
from app.db.changes import UPDATE, record_change
from app.db.tables import Image
from app.errors import InvalidMetadataError, NotFoundError

Order = Literal["asc", "desc"]


class Rows(Protocol):
    """What these functions need of a collection: its database (a Collection, or the CLI's rows alone,
    which need no model)."""

    engine: Engine
    sessions: sessionmaker[Session]


@dataclass
class RowStore:
    engine: Engine
    sessions: sessionmaker[Session]


@dataclass(frozen=True)
class Page:
    images: list[Image]
    next: str | None
    total: int


def condition(collection: Rows, spec: dict[str, Any] | None, path_prefix: str | None) -> ColumnElement[bool]:
    return where(spec, path_prefix, collection.engine.dialect.name)


def list_page(
    collection: Rows,
    *,
    limit: int,
    after: int | None = None,
    order: Order = "asc",
    spec: dict[str, Any] | None = None,
    path_prefix: str | None = None,
) -> Page:
    """One page of the images matching the filter; ``next`` is the cursor of the following page, if any."""
    matching = condition(collection, spec, path_prefix)
    query = select(Image).where(matching)
    if after is not None:
        query = query.where(Image.id > after if order == "asc" else Image.id < after)
    query = query.order_by(Image.id.asc() if order == "asc" else Image.id.desc()).limit(limit + 1)
    with collection.sessions() as session:
        rows = list(session.scalars(query))
        total = int(session.scalar(select(func.count()).select_from(Image).where(matching)) or 0)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, str(rows[-1].id) if more and rows else None, total)


def matching_ids(collection: Rows, spec: dict[str, Any] | None, path_prefix: str | None) -> np.ndarray:
    """The ids of every image matching the filter (what a filtered vector search keeps to)."""
    query = select(Image.id).where(condition(collection, spec, path_prefix)).order_by(Image.id)
    with collection.sessions() as session:
        return np.fromiter(session.scalars(query), dtype=np.int64)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, ``null`` removes a key, anything else replaces.

    Hand-written because it is the RFC's own ten-line algorithm (section 2), not worth a dependency.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patch_metadata(collection: Rows, image_id: int, patch: dict[str, Any], *, replace: bool = False) -> Image:
    """Apply a merge patch (or, with ``replace``, set) the image's metadata, in one transaction."""
    if not isinstance(patch, dict):
        raise InvalidMetadataError(f"metadata must be a JSON object, got {type(patch).__name__}")
    with collection.sessions.begin() as session:
        row = session.get(Image, image_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no image with id {image_id}")
        merged = merge_patch({}, patch) if replace else merge_patch(row.meta or {}, patch)
        row.meta = merged  # a new object: SQLAlchemy sees the change
        record_change(session, UPDATE, [image_id])  # every process's cached rows follow the feed
        session.flush()
        session.expunge(row)
    return row


def get_row(collection: Rows, image_id: int) -> Image:
    with collection.sessions() as session:
        row = session.get(Image, image_id)
    if row is None:
        raise NotFoundError(f"no image with id {image_id}")
    return row

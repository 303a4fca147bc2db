"""Managing the collection: list and filter it page by page, edit an image's metadata, delete in bulk.

Roles (app/auth/policy.py decides by method): GET /images is a read; PATCH /images/{id} and
POST /images/delete change the collection and need a write key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ColumnElement

from app.auth.policy import Access, policy
from app.collection import catalog
from app.collection.filters import parse_filter, where
from app.db.tables import Image
from app.deps import CollectionDep, SettingsDep
from app.errors import InvalidRequestError
from app.files.thumbnails import Thumbnails
from app.routes.images import ERRORS, ImageId
from app.routes.strict import query_params
from app.schemas import ImageOut

router = APIRouter(prefix="/images", tags=["images"])

MAX_LIMIT = 500
MAX_IDS = 10_000
FILTER_HELP = (
    'JSON object: {"sku": "A-17", "price": {"$gte": 10}, "tag": {"$in": ["a", "b"]}, "note": {"$exists": '
    "false}}; operators $eq $in $gt $gte $lt $lte $exists; keys are metadata keys, or created_at, format, "
    "width, height, size_bytes."
)


class ImageListOut(BaseModel):
    images: list[ImageOut]
    next: str | None = Field(description="Pass as `after` for the next page; null on the last page.")
    total: int = Field(description="Images matching the filter and path prefix, over all pages.")


class MetadataPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: dict[str, Any] = Field(
        description="An RFC 7396 JSON merge patch of the metadata: keys set, null removes a key."
    )


class BulkDelete(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] | None = Field(default=None, max_length=MAX_IDS)
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_HELP)
    path_prefix: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> BulkDelete:
        given = [name for name in ("ids", "filter", "path_prefix") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "send exactly one of ids, filter or path_prefix"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.filter is not None and not self.filter:
            raise ValueError("an empty filter would delete everything: send a condition")
        return self


class BulkDeleteOut(BaseModel):
    deleted: int
    ids: list[int] = Field(description="The ids deleted (none are ever reused).")


@router.get(
    "",
    response_model=ImageListOut,
    responses=ERRORS,
    dependencies=[
        policy(Access.read),
        Depends(query_params("limit", "after", "order", "filter", "path_prefix")),
    ],
)
def list_images(
    collection: CollectionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Images per page.")] = 50,
    after: Annotated[str | None, Query(description="The cursor of the page before (its `next`).")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest.")] = "asc",
    filter: Annotated[str | None, Query(description=FILTER_HELP)] = None,
    path_prefix: Annotated[str | None, Query(description="Only paths starting with this.")] = None,
) -> ImageListOut:
    if after is not None and not (after.isdigit() and 0 < int(after) <= 2**62):
        raise InvalidRequestError(f"after must be a cursor returned as `next`, got {after!r}")
    page = catalog.list_page(
        collection,
        limit=limit,
        after=int(after) if after is not None else None,
        order=order,
        spec=parse_filter(filter),
        path_prefix=path_prefix,
    )
    return ImageListOut(images=[ImageOut.from_row(r) for r in page.images], next=page.next, total=page.total)


@router.patch("/{image_id}", response_model=ImageOut, responses=ERRORS, dependencies=[policy(Access.write)])
def patch_image(collection: CollectionDep, image_id: ImageId, body: MetadataPatch) -> ImageOut:
    """Edit the metadata as a JSON merge patch: `{"metadata": {"price": 12, "old": null}}` sets price and
    removes old; other keys stay."""
    return ImageOut.from_row(catalog.patch_metadata(collection, image_id, body.metadata))


@router.post("/delete", response_model=BulkDeleteOut, responses=ERRORS, dependencies=[policy(Access.write)])
def delete_images(collection: CollectionDep, settings: SettingsDep, body: BulkDelete) -> BulkDeleteOut:
    """Delete by ids, by filter or by path prefix (exactly one), in one transaction; the index follows."""
    condition: ColumnElement[bool]
    if body.ids is not None:
        condition = Image.id.in_(body.ids)
    else:
        condition = where(body.filter, body.path_prefix, collection.engine.dialect.name)
    rows = collection.delete_where(condition)
    thumbnails = Thumbnails.for_settings(settings)
    for row in rows:
        thumbnails.drop(row.sha256)
    return BulkDeleteOut(deleted=len(rows), ids=[row.id for row in rows])

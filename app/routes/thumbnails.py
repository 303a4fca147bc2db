"""Thumbnails of stored images, for result grids."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from app.auth.policy import Access, policy
from app.deps import CollectionDep, SettingsDep
from app.files.thumbnails import DEFAULT_SIZE, SIZES, Thumbnails, check_size, etag
from app.routes.images import ERRORS, ImageId

router = APIRouter(prefix="/images", tags=["images"])

# Revalidated hourly: ids are never reused (migration 20261201_change_feed), and the ETag (the content's hash)
# is what tells a browser its copy is still right even for a collection restored from an older backup.
CACHE_CONTROL = "public, max-age=3600"


def get_thumbnails(settings: SettingsDep) -> Thumbnails:
    return Thumbnails.for_settings(settings)


ThumbnailsDep = Annotated[Thumbnails, Depends(get_thumbnails)]


@router.get(
    "/{image_id}/thumbnail",
    response_class=FileResponse,
    responses={**ERRORS, 304: {"description": "The client's copy (If-None-Match) is current."}},
    dependencies=[policy(Access.read)],
)
def get_thumbnail(
    request: Request,
    collection: CollectionDep,
    thumbnails: ThumbnailsDep,
    image_id: ImageId,
    size: Annotated[
        int, Query(description=f"Long side in pixels, one of {', '.join(map(str, SIZES))}.")
    ] = DEFAULT_SIZE,
) -> Response:
    """A JPEG no larger than `size` on its long side (nor than the original), made once and then cached."""
    check_size(size)
    row = collection.get(image_id)
    tag = etag(row.sha256, size)
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    wanted = _etags(request.headers.get("if-none-match"))
    if tag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    path = thumbnails.get(row.sha256, size, collection.file_path(row), max(row.width, row.height))
    return FileResponse(path, media_type="image/jpeg", headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.strip().removeprefix("W/") for part in header.split(",")}

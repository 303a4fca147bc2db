"""Adding, reading and deleting images of the collection."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Response, UploadFile
from fastapi.responses import FileResponse

from app.auth.policy import Access, policy
from app.deps import CollectionDep, SettingsDep
from app.files.storage import media_type
from app.files.thumbnails import Thumbnails
from app.routes.uploads import OnDuplicate, duplicate_answer, parse_metadata, read_upload, upload_name
from app.schemas import DeleteOut, ErrorOut, ImageOut, UploadOut

router = APIRouter(prefix="/images", tags=["images"])

ImageId = Annotated[int, Path(ge=1, le=2**62, description="The image's id.")]
ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorOut},
    413: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.post(
    "",
    response_model=UploadOut,
    status_code=201,
    responses={200: {"model": UploadOut}, **ERRORS},
    dependencies=[policy(Access.write, shed=True)],
)
def upload_image(
    collection: CollectionDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, GIF, BMP or TIFF).")],
    metadata: Annotated[str | None, Form(description="Optional JSON object stored with the image.")] = None,
    on_duplicate: Annotated[
        OnDuplicate,
        Form(
            description="When the content is already stored: keep its metadata, merge this metadata into "
            "it (a JSON merge patch), or replace it."
        ),
    ] = "keep",
) -> UploadOut:
    meta = parse_metadata(metadata)
    data = read_upload(file, settings.max_upload_bytes)
    added = collection.add_upload(data, upload_name(file.filename), meta)
    if not added.duplicate:
        return UploadOut(id=added.image.id, duplicate=False, image=ImageOut.from_row(added.image))
    response.status_code = 200
    sent = meta if metadata is not None and metadata.strip() else None
    return duplicate_answer(collection, added.image, sent, on_duplicate)


@router.get("/{image_id}", response_model=ImageOut, responses=ERRORS, dependencies=[policy(Access.read)])
def get_image(collection: CollectionDep, image_id: ImageId) -> ImageOut:
    return ImageOut.from_row(collection.get(image_id))


@router.get(
    "/{image_id}/file",
    response_class=FileResponse,
    responses=ERRORS,
    dependencies=[policy(Access.read)],
)
def get_image_file(collection: CollectionDep, image_id: ImageId) -> FileResponse:
    row = collection.get(image_id)
    # The ETag is the content's hash (not the file's mtime and size): a cached copy validates only for the
    # same picture, and ids are never reused, so an id never comes to mean another one.
    return FileResponse(
        collection.file_path(row),
        media_type=media_type(row.format),
        headers={"ETag": f'"{row.sha256}"'},
        filename=PurePosixPath(row.original_name).name or f"image-{row.id}",
        content_disposition_type="inline",  # shown by a browser; saved under the original name
    )


@router.delete("/{image_id}", response_model=DeleteOut, responses=ERRORS, dependencies=[policy(Access.write)])
def delete_image(collection: CollectionDep, settings: SettingsDep, image_id: ImageId) -> DeleteOut:
    row = collection.delete(image_id)
    Thumbnails.for_settings(settings).drop(row.sha256)  # a deleted image must not linger as a thumbnail
    return DeleteOut(id=row.id, deleted=True)

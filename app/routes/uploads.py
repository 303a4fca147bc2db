"""Reading uploaded files within the configured size limit."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from starlette.datastructures import UploadFile

from app.errors import InvalidImageError, InvalidMetadataError, PayloadTooLargeError

if TYPE_CHECKING:
    from app.collection.facade import Collection
    from app.db.tables import Image
    from app.schemas import UploadOut

OnDuplicate = Literal["keep", "merge", "replace"]


def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"the upload is larger than the {limit} byte limit (CBIR_MAX_UPLOAD_BYTES)"
        )
    if not data:
        raise InvalidImageError("the uploaded file is empty (0 bytes)")
    return data


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """A JSON object that every database stores and every client reads back unchanged, or a 422 saying why
    not: Python's json would take NaN and Infinity (stored as null), nesting deep enough to exhaust the
    stack (a 500), lone surrogates (unserialisable on the way out) and NUL characters (refused by
    PostgreSQL's JSONB)."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidMetadataError(f"metadata is not valid JSON: {exc.msg} at character {exc.pos}") from exc
    except RecursionError:
        raise InvalidMetadataError(
            "metadata is nested too deeply: flatten it (a few levels suffice)"
        ) from None
    if not isinstance(value, dict):
        raise InvalidMetadataError(f"metadata must be a JSON object, got {type(value).__name__}")
    _check_strings(value)
    return value


def upload_name(filename: str | None) -> str:
    """The upload's name with any path components stripped (a client may send ``C:\\x\\a.jpg``)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else "upload"


def duplicate_answer(
    collection: Collection, existing: Image, meta: dict[str, Any] | None, on_duplicate: OnDuplicate
) -> UploadOut:
    """The answer to an upload of content already stored: what happened to the metadata it carried."""
    from app.collection.catalog import patch_metadata
    from app.schemas import ImageOut, UploadOut

    if meta is None:
        return UploadOut(id=existing.id, duplicate=True, image=ImageOut.from_row(existing))
    if on_duplicate == "keep":
        return UploadOut(
            id=existing.id,
            duplicate=True,
            image=ImageOut.from_row(existing),
            metadata_applied=False,
            hint=f"this content is already stored as image {existing.id}, whose metadata was kept: send "
            f"on_duplicate=merge or on_duplicate=replace, or PATCH /images/{existing.id}",
        )
    row = patch_metadata(collection, existing.id, meta, replace=on_duplicate == "replace")
    return UploadOut(id=row.id, duplicate=True, image=ImageOut.from_row(row), metadata_applied=True)


def _refuse_constant(name: str) -> Any:
    raise InvalidMetadataError(
        f"metadata holds {name}, which standard JSON does not allow: send a number or null"
    )


def _check_strings(value: Any) -> None:
    """Every key and string of `value` must be UTF-8 encodable and free of NUL (iterative: no recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidMetadataError("metadata holds a NUL character (\\u0000): remove it")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidMetadataError(
                    "metadata holds a lone UTF-16 surrogate (such as \\ud800): send valid Unicode"
                ) from None

"""Reading uploaded files within the configured size limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi import UploadFile

from app.errors import InvalidImageError, InvalidMetadataError, PayloadTooLargeError


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
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidMetadataError(f"metadata is not valid JSON: {exc.msg} at character {exc.pos}") from exc
    if not isinstance(value, dict):
        raise InvalidMetadataError(f"metadata must be a JSON object, got {type(value).__name__}")
    return value

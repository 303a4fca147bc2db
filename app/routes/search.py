"""Similarity search by what the client has: an uploaded file, a stored image's id ("more like this"), a
vector, or an image URL; filtered, thresholded and paged inside the vector search.

One route takes multipart/form-data (needed for a file) and application/json alike, so it reads the body
itself and validates it with one model that forbids unknown fields: a mistyped field or a query-string
parameter (``?k=2``) is a 422 naming it, never silently ignored.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import UploadFile

from app.auth.policy import Access, policy
from app.collection import catalog
from app.collection.facade import Collection, Hit
from app.collection.filters import parse_filter
from app.config import Settings
from app.db import vectors as vectors_codec
from app.deps import CollectionDep, SettingsDep
from app.errors import CollectionMismatchError, InvalidRequestError
from app.files.fetch import fetch_image
from app.routes.catalog import FILTER_HELP
from app.routes.images import ERRORS
from app.routes.strict import unknown_query
from app.routes.uploads import read_upload
from app.schemas import SearchHit, SearchOut
from app.search.queries import parse_box
from index import SearchParams

router = APIRouter(tags=["search"])

MAX_K = 100
MAX_OFFSET = 1000
SOURCES = ("file", "id", "vector", "url")


class SearchQuery(BaseModel):
    """Everything but the file; exactly one of file, id, vector and url is the query."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(
        default=None, ge=1, le=2**62, description="More like this stored image (left out of the results)."
    )
    vector: list[float] | None = Field(
        default=None,
        description="A descriptor of the collection's dimension (GET /stats); L2-normalised here.",
    )
    url: str | None = Field(
        default=None, description="An image URL on a host of CBIR_FETCH_ALLOWED_HOSTS (off by default)."
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many results, at most 100.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Results to skip (the next page).")
    threshold: float | None = Field(default=None, ge=-1, le=1, description="Minimum score of a result.")
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_HELP)
    path_prefix: str | None = Field(default=None, description="Only images whose path starts with this.")
    box: str | None = Field(
        default=None,
        description="Search for a region only: x0,y0,x1,y1 in pixels of the query image (file or url).",
    )
    query_expansion: int | None = Field(
        default=None, ge=0, le=100, description="Query expansion neighbours; 0: off [the service's]."
    )
    database_augmentation: int | None = Field(
        default=None, ge=0, le=100, description="Database-side augmentation neighbours; 0: off."
    )
    nprobe: int | None = Field(default=None, ge=1, le=65536, description="IVF: cells scanned.")
    ef_search: int | None = Field(default=None, ge=1, le=4096, description="HNSW: candidate list length.")

    @model_validator(mode="after")
    def _box_needs_pixels(self) -> SearchQuery:
        if self.box is not None and (self.id is not None or self.vector is not None):
            raise ValueError("box applies to an image query (file or url), not to id or vector")
        return self


def _form_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary", "description": "The query."}}
    for name, field in SearchQuery.model_fields.items():
        properties[name] = {"type": "string", "description": field.description or ""}
    return {"type": "object", "properties": properties}


OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _form_schema()},
            "application/json": {"schema": SearchQuery.model_json_schema()},
        },
    }
}


@router.post(
    "/search",
    response_model=SearchOut,
    responses=ERRORS,
    openapi_extra=OPENAPI_BODY,
    dependencies=[policy(Access.read, shed=True)],
)
async def search(request: Request, collection: CollectionDep, settings: SettingsDep) -> SearchOut:
    """Send exactly one of `file` (multipart), `id`, `vector` or `url`; the other fields refine it.

    multipart: `curl -F file=@q.jpg -F k=5 -F filter='{"sku": "A-17"}' …/search`;
    JSON: `curl -H 'Content-Type: application/json' -d '{"id": 42, "k": 5}' …/search`.
    """
    unknown_query(request, ())
    fields, upload = await _read_body(request, settings)
    try:
        query = SearchQuery.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    given = [name for name in SOURCES if (upload if name == "file" else getattr(query, name)) is not None]
    if len(given) != 1:
        raise InvalidRequestError(
            "send exactly one of file (a multipart/form-data part), id, vector or url"
            + (f"; got {' and '.join(given)}" if given else "")
        )
    data = read_upload(upload, settings.max_upload_bytes) if upload is not None else None
    return await run_in_threadpool(_run, collection, settings, query, data)


async def _read_body(request: Request, settings: Settings) -> tuple[dict[str, Any], UploadFile | None]:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        try:
            body = await request.json()
        except ValueError as exc:
            raise InvalidRequestError(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidRequestError(f"the JSON body must be an object, got {type(body).__name__}")
        if "file" in body:
            raise InvalidRequestError(
                "a file cannot travel in JSON: send multipart/form-data with a file part"
            )
        return body, None
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=64)
        fields: dict[str, Any] = {}
        upload: UploadFile | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise InvalidRequestError(f"unknown file part {name!r}: the query image is named 'file'")
                upload = value
            elif name == "file":
                raise InvalidRequestError(
                    "file must be a file part of a multipart/form-data body (curl -F file=@photo.jpg), "
                    "not text"
                )
            elif value.strip():
                fields[name] = _form_value(name, value)
        return fields, upload
    raise InvalidRequestError(
        "send the search as multipart/form-data (with the image as a part named 'file') or as "
        "application/json (with id, vector or url)"
    )


def _form_value(name: str, value: str) -> Any:
    """Form fields are text: the JSON ones (vector, filter) are decoded, the others validated as typed."""
    if name == "vector":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"vector is not a JSON list of numbers: {exc.msg}") from exc
    if name == "filter":
        return parse_filter(value)
    return value


def _run(collection: Collection, settings: Settings, query: SearchQuery, data: bytes | None) -> SearchOut:
    asked = query.query_expansion is not None or query.database_augmentation is not None
    rerank = (
        collection.rerank.overridden(query.query_expansion, query.database_augmentation) if asked else None
    )
    params = collection.search_params
    if query.nprobe is not None or query.ef_search is not None:
        params = SearchParams(query.nprobe or params.nprobe, query.ef_search or params.ef_search)
    allowed = None
    if query.filter is not None or query.path_prefix:
        allowed = catalog.matching_ids(collection, query.filter, query.path_prefix)
    depth = query.k + query.offset
    hits: list[Hit]
    if allowed is not None and not len(allowed):
        hits = []  # nothing matches the filter: nothing to search (nor to embed)
    elif query.id is not None or query.vector is not None:
        vector, exclude = _stored_or_given(collection, query)
        hits = collection.search_vectors(
            vector[None, :], depth, rerank, None, params, allowed_ids=allowed, exclude=[exclude]
        )[0]
    else:
        if data is None:
            assert query.url is not None
            data = fetch_image(query.url, settings)
        box = parse_box(query.box) if query.box is not None else None
        hits = collection.search_image(data, depth, rerank, box, params, allowed_ids=allowed)
    hits = hits[query.offset :]
    if query.threshold is not None:
        hits = [hit for hit in hits if hit.score >= query.threshold]
    return SearchOut(
        k=query.k,
        encoder=collection.encoder.fingerprint,
        results=[SearchHit.from_hit(hit) for hit in hits],
    )


def _stored_or_given(collection: Collection, query: SearchQuery) -> tuple[np.ndarray, int | None]:
    """The query vector of an id (its stored descriptor, itself excluded) or of a given vector."""
    dim = collection.encoder.dim
    if query.id is not None:
        row = collection.get(query.id)
        if row.encoder != collection.encoder.fingerprint:
            raise CollectionMismatchError(
                f"image {row.id} was embedded by '{row.encoder}', the service searches with "
                f"'{collection.encoder.fingerprint}': retry once `cbir reindex` has finished"
            )
        return vectors_codec.decode(row.vector), row.id
    vector = np.asarray(query.vector, dtype=np.float32)
    if vector.shape != (dim,):
        raise InvalidRequestError(
            f"vector has {vector.size} values; the collection's descriptors have {dim} "
            "(GET /stats: dimension)"
        )
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or norm == 0:
        raise InvalidRequestError("vector must be finite and not all zeros")
    return vector / norm, None

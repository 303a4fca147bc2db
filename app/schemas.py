"""Request and response models: the public contract of the REST API (and its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from app.db.tables import Image

if TYPE_CHECKING:  # the collection module loads the encoder's libraries; only its Hit type is needed
    from app.collection.facade import Hit


def image_url(image_id: int) -> str:
    return f"/images/{image_id}/file"


def thumbnail_url(image: Image) -> str:
    """Changes with the content (``v``: a prefix of its SHA-256), so no cache can show another image."""
    return f"/images/{image.id}/thumbnail?v={image.sha256[:12]}"


PATH_DESCRIPTION = (
    "Where the image came from, as indexed: relative to the indexed folder, or the upload's name."
)


class ImageOut(BaseModel):
    id: int
    sha256: str
    original_name: str
    width: int
    height: int
    size_bytes: int
    format: str
    created_at: datetime
    metadata: dict[str, Any]
    encoder: str
    url: str
    path: str = Field(description=PATH_DESCRIPTION)
    thumbnail_url: str

    @classmethod
    def from_row(cls, row: Image) -> ImageOut:
        return cls(
            id=row.id,
            sha256=row.sha256,
            original_name=row.original_name,
            width=row.width,
            height=row.height,
            size_bytes=row.size_bytes,
            format=row.format,
            created_at=row.created_at,
            metadata=row.meta or {},
            encoder=row.encoder,
            url=image_url(row.id),
            path=row.original_name,
            thumbnail_url=thumbnail_url(row),
        )


class UploadOut(BaseModel):
    id: int
    duplicate: bool = Field(description="True when identical content was already stored; id is that image's.")
    image: ImageOut
    metadata_applied: bool | None = Field(
        default=None,
        description="For a duplicate sent with metadata: whether it was applied (see on_duplicate).",
    )
    hint: str | None = None


class SearchHit(BaseModel):
    id: int
    score: float = Field(
        description="Higher is closer, in [-1, 1]: the cosine of the descriptors, raised towards 1 by the "
        "evidence that the hit is the same picture: p_same + (1 - p_same) * cosine; results are sorted "
        "by it."
    )
    match: Literal["same", "similar"] = Field(
        description='"same": an edited copy or near-duplicate of the query (p_same >= 0.5); "similar": '
        "only looks alike (README, Choosing a descriptor)."
    )
    p_same: float = Field(
        description="Calibrated probability that the hit is the same picture (0 when not verified)."
    )
    inliers: int | None = Field(
        description="Local features matched under one geometric transform (null: not verified)."
    )
    original_name: str
    path: str = Field(description=PATH_DESCRIPTION)
    metadata: dict[str, Any]
    url: str
    thumbnail_url: str

    @classmethod
    def from_hit(cls, hit: Hit) -> SearchHit:
        image = hit.image
        return cls(
            id=image.id,
            score=hit.score,
            match=hit.match,
            p_same=round(hit.p_same, 4),
            inliers=hit.inliers,
            original_name=image.original_name,
            path=image.original_name,
            metadata=image.meta or {},
            url=image_url(image.id),
            thumbnail_url=thumbnail_url(image),
        )


class SearchOut(BaseModel):
    k: int
    encoder: str
    results: list[SearchHit]


class DuplicatesOut(BaseModel):
    id: int
    threshold: float = Field(
        description="Cosine of stored descriptors from which neighbours are verified as the same picture."
    )
    results: list[SearchHit]


class DeleteOut(BaseModel):
    id: int
    deleted: bool


class StatsOut(BaseModel):
    count: int
    indexed: int
    dimension: int
    encoder: str
    index_type: str
    device: str
    runtime: str = Field(
        default="torch", description="How the encoder's backbone runs (CBIR_RUNTIME; auto's choice shown)."
    )
    removed_entries: int = Field(
        description="Deleted images whose vectors an HNSW index still holds (memory, search time) until "
        "`cbir index-build` rebuilds it; 0 for the other index types."
    )


class HealthOut(BaseModel):
    status: str
    model_loaded: bool
    index_loaded: bool


class ErrorOut(BaseModel):
    error: str
    detail: Any

"""Near-duplicates of a stored image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.policy import Access, policy
from app.deps import CollectionDep, SettingsDep
from app.routes.images import ERRORS, ImageId
from app.schemas import DuplicatesOut, SearchHit
from app.search.duplicates import duplicates_of

router = APIRouter(prefix="/images", tags=["images"])


@router.get(
    "/{image_id}/duplicates",
    response_model=DuplicatesOut,
    responses=ERRORS,
    dependencies=[policy(Access.read)],
)
def duplicates(
    collection: CollectionDep,
    settings: SettingsDep,
    image_id: ImageId,
    threshold: Annotated[
        float | None,
        Query(
            gt=0,
            le=1,
            description="Cosine similarity from which neighbours are verified as the same picture "
            "[CBIR_DUPLICATE_THRESHOLD].",
        ),
    ] = None,
) -> DuplicatesOut:
    limit = settings.duplicate_threshold if threshold is None else threshold
    hits = duplicates_of(collection, image_id, limit)
    return DuplicatesOut(
        id=image_id,
        threshold=limit,
        results=[SearchHit.from_hit(hit) for hit in hits],
    )

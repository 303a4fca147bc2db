"""Readiness and collection statistics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.auth.policy import Access, policy
from app.collection.facade import Collection
from app.deps import CollectionDep
from app.schemas import HealthOut, StatsOut

router = APIRouter(tags=["service"])


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut}},
    dependencies=[policy(Access.public)],
)
def health(request: Request) -> JSONResponse:
    collection: Collection | None = getattr(request.app.state, "collection", None)
    ready = collection is not None
    body = HealthOut(
        status="ready" if ready else "loading",
        model_loaded=collection is not None and collection.encoder is not None,
        index_loaded=collection is not None and collection.index is not None,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/stats", response_model=StatsOut, dependencies=[policy(Access.read)])
def stats(collection: CollectionDep) -> StatsOut:
    return StatsOut(**collection.stats())

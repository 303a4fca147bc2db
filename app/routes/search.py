"""Similarity search by example image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.deps import CollectionDep, SettingsDep
from app.routes.images import ERRORS
from app.routes.uploads import read_upload
from app.schemas import SearchHit, SearchOut
from app.services.queries import parse_box
from index import SearchParams

router = APIRouter(tags=["search"])

MAX_K = 100


@router.post("/search", response_model=SearchOut, responses=ERRORS)
def search(
    collection: CollectionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The query image.")],
    k: Annotated[int, Form(ge=1, le=MAX_K, description="How many results, at most 100.")] = 10,
    box: Annotated[
        str | None,
        Form(
            description="Search for a region only: x0,y0,x1,y1 in pixels of the uploaded image "
            "(pooled from the query's feature map)."
        ),
    ] = None,
    query_expansion: Annotated[
        int | None,
        Form(ge=0, le=100, description="Query expansion neighbours; 0: off [the service's; 0 with a box]."),
    ] = None,
    database_augmentation: Annotated[
        int | None,
        Form(ge=0, le=100, description="Database-side augmentation neighbours; 0: off [as query expansion]."),
    ] = None,
    nprobe: Annotated[
        int | None,
        Form(
            ge=1,
            le=65536,
            description="IVF: cells scanned (more: better recall, slower) [CBIR_NPROBE or the index's].",
        ),
    ] = None,
    ef_search: Annotated[
        int | None,
        Form(ge=1, le=4096, description="HNSW: candidate list length [CBIR_EF_SEARCH or the index's]."),
    ] = None,
) -> SearchOut:
    data = read_upload(file, settings.max_upload_bytes)
    asked = query_expansion is not None or database_augmentation is not None
    rerank = collection.rerank.overridden(query_expansion, database_augmentation) if asked else None
    params = collection.search_params
    if nprobe is not None or ef_search is not None:
        params = SearchParams(nprobe or params.nprobe, ef_search or params.ef_search)
    hits = collection.search_image(data, k, rerank, parse_box(box) if box is not None else None, params)
    return SearchOut(
        k=k,
        encoder=collection.encoder.fingerprint,
        results=[SearchHit.from_hit(hit) for hit in hits],
    )

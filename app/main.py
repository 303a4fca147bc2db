"""The FastAPI application: built by ``create_app(settings)``, which loads the encoder and the collection
in its lifespan, so each app (and each test) owns its own data directory, database and index."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from app import observability
from app.auth.keys import any_active
from app.auth.policy import Access, check_policies, declare, matched_policy
from app.collection.facade import Collection
from app.config import Settings
from app.encoders import encoder_from_settings
from app.errors import PayloadTooLargeError, error_response, install_error_handlers
from app.head_requests import HeadAsGet
from app.routes import catalog, denoise, docs, duplicates, health, images, pages, search, thumbnails

log = logging.getLogger("cbir")

# Multipart framing around the file: a request this much above the upload limit cannot hold a valid upload.
MULTIPART_SLACK = 64 * 1024


def create_app(settings: Settings | None = None, opened: Collection | None = None) -> FastAPI:
    """``opened``: the collection, already opened by `cbir serve` so that a bad setting is one line of error
    before the server starts rather than a traceback from its startup; otherwise the lifespan opens it."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        collection = opened or Collection.open(settings, encoder_from_settings(settings))
        encoder = collection.encoder
        collection.meter = app.state.metrics
        app.state.collection = collection
        if not any_active(collection.sessions):
            log.warning(
                "no API key exists: anyone who can reach this service may read and write the collection; "
                "create one with `cbir keys create --role admin`"
            )
        log.info(
            "ready: %d images, encoder %s (dim %d) on %s, data in %s",
            collection.index.ntotal,
            encoder.fingerprint,
            encoder.dim,
            encoder.device,
            settings.data_dir,
        )
        try:
            yield
        finally:
            app.state.collection = None
            collection.save_index()
            collection.close()

    app = FastAPI(
        title="cbir",
        summary="Find visually similar images: upload a collection, search it by example.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # app/routes/docs.py serves /docs without a CDN
        redoc_url=None,  # ReDoc fetches from a CDN
    )
    app.state.settings = settings
    app.state.collection = None
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.middleware("http")
    async def reject_oversized(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Refuse a body we would refuse anyway before it is read and spooled to disk.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_SLACK:
            return error_response(
                PayloadTooLargeError(
                    f"the request is {length} bytes, above the {settings.max_upload_bytes} byte "
                    "upload limit (CBIR_MAX_UPLOAD_BYTES)"
                )
            )
        return await call_next(request)

    @app.middleware("http")
    async def shed_load_early(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # A request that needs inference while the gate is full is refused before its body is read and
        # parsed: under overload, each refusal must cost next to nothing, or refusing starves the forward
        # passes of the very CPU they need (bench/load.py: 113 refusals/s cut answered searches to 2/s).
        # Which requests: those whose route declares shed=True (app/auth/policy.py): the encoder's.
        collection = request.app.state.collection
        if collection is not None and collection.gate.full:
            found = matched_policy(request.app.state.route_policies, request.scope)
            if found is not None and found.shed:
                return error_response(collection.gate.busy())
        return await call_next(request)

    app.include_router(catalog.router)
    app.include_router(images.router)
    app.include_router(duplicates.router)
    app.include_router(search.router)
    app.include_router(denoise.router)
    app.include_router(health.router)
    app.include_router(thumbnails.router)
    pages.install(app)
    docs.install(app)
    app.add_middleware(HeadAsGet)
    observability.install(app)  # last: its middleware is the outermost
    if app.openapi_url:
        declare(
            next(r for r in app.router.routes if getattr(r, "path", None) == app.openapi_url), Access.public
        )
    app.state.route_policies = check_policies(app)  # a route without a declared policy stops here
    return app

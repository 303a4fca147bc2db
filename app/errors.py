"""The two kinds of error, and how each reaches a person.

ApiError: a request the service refuses. Its status and its code (``error``) are the public contract of the
HTTP API, so every one of them is listed here and nowhere else (tests/app/test_errors.py checks that no
other module defines one); a client gets JSON ``{"error", "detail"}``. The CLI prints the same ``detail``
and exits 1 when a command meets one (an upload it cannot decode, an image id that does not exist).

JobError: a command or batch job that cannot go on (a backup into a non-empty folder, a manifest without
its path column). It has an exit status, never an HTTP status: no client ever sees one. Jobs define theirs
beside their code (app/jobs/backup.py's BackupError, …).

Either way a message says what was wrong and what to do, and is written once.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cbir.errors")


class ApiError(Exception):
    """A refused request: ``status_code`` and ``error`` are what the client gets, ``detail`` what to do."""

    status_code: ClassVar[int] = 400
    error: ClassVar[str] = "bad_request"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class JobError(Exception):
    """A command or job that cannot go on; ``exit_code`` is the CLI's exit status (no HTTP status)."""

    exit_code: ClassVar[int] = 1

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- the API's errors: status, code ------------------------------------------------------------------


class NotFoundError(ApiError):
    status_code = 404
    error = "not_found"


class InvalidImageError(ApiError):
    status_code = 422
    error = "invalid_image"


class PayloadTooLargeError(ApiError):
    status_code = 413
    error = "payload_too_large"


class InvalidMetadataError(ApiError):
    status_code = 422
    error = "invalid_metadata"


class InvalidRequestError(ApiError):
    """A well-formed field that cannot be used, e.g. a search box outside the query image."""

    status_code = 422
    error = "invalid_request"


class InvalidThumbnailSizeError(InvalidRequestError):
    """A thumbnail size outside the fixed list (app/files/thumbnails.py SIZES)."""


class InvalidNoiseError(ApiError):
    """`POST /denoise` asked for a noise kind or strength that does not exist."""

    status_code = 422
    error = "invalid_noise"


class UrlRefusedError(ApiError):
    """A search by URL that may not or cannot be fetched (host not allowed, private address, redirect…)."""

    status_code = 422
    error = "url_refused"


class UnauthorizedError(ApiError):
    status_code = 401
    error = "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ApiError):
    status_code = 403
    error = "forbidden"


class CollectionMismatchError(ApiError):
    """The stored collection was embedded by another encoder than the configured one."""

    status_code = 409
    error = "encoder_mismatch"


class NotAnAutoencoderError(ApiError):
    """The configured encoder has no decoder, so there is nothing to reconstruct with."""

    status_code = 409
    error = "not_an_autoencoder"


class NotReadyError(ApiError):
    status_code = 503
    error = "not_ready"


class ServiceBusyError(ApiError):
    """The inference gate is full (app/gate.py): come back later."""

    status_code = 503
    error = "busy"
    # 2 s, measured with bench/load.py at 32 clients: against 1 s, half the refusals and a p99 of ~185 ms
    # instead of ~250 (each refusal still costs both sides a request); 3 s answered fewer for no gain.
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "2"}


# Codes the handlers below answer with for what is not an ApiError.
STORE_UNAVAILABLE = "vector_store_unavailable"  # 503, the Milvus server is unreachable
VALIDATION_FAILED = InvalidRequestError.error  # 422, a field FastAPI's validation refused
INTERNAL_ERROR = "internal_error"  # 500, a bug: the log has the traceback


def _body(error: str, detail: object) -> dict[str, object]:
    return {"error": error, "detail": detail}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(_body(exc.error, exc.detail), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    from index import StoreUnavailableError  # here, not at import: `cbir --help` loads no FAISS

    @app.exception_handler(StoreUnavailableError)
    async def _store(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        # The message names CBIR_MILVUS_URI; the store's client reconnects by itself, so retrying works.
        body = _body(STORE_UNAVAILABLE, str(exc))
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        if any(p["field"] == "file" for p in problems):  # missing, or sent as text or JSON
            summary += (
                "; send the image as a file part named 'file' of a multipart/form-data body "
                "(curl -F file=@photo.jpg)"
            )
        return JSONResponse(_body(VALIDATION_FAILED, summary or "invalid request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(error, exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the log keeps it for the operator.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body(INTERNAL_ERROR, "internal error; see the server log"), status_code=500)

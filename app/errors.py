"""Domain errors and their HTTP mapping: every error reaches a client as JSON ``{"error", "detail"}``.

The same exceptions are raised to the CLI, which prints ``detail`` and exits non-zero, so a message is
written once and reads well in both places: it says what was wrong and what to do.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cbir.errors")


class CbirError(Exception):
    status_code = 400
    error = "bad_request"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(CbirError):
    status_code = 404
    error = "not_found"


class InvalidImageError(CbirError):
    status_code = 422
    error = "invalid_image"


class PayloadTooLargeError(CbirError):
    status_code = 413
    error = "payload_too_large"


class InvalidMetadataError(CbirError):
    status_code = 422
    error = "invalid_metadata"


class InvalidRequestError(CbirError):
    """A well-formed field that cannot be used, e.g. a search box outside the query image."""

    status_code = 422
    error = "invalid_request"


class NotReadyError(CbirError):
    status_code = 503
    error = "not_ready"


class CollectionMismatchError(CbirError):
    """The stored collection was embedded by another encoder than the configured one."""

    status_code = 409
    error = "encoder_mismatch"


def _body(error: str, detail: object) -> dict[str, object]:
    return {"error": error, "detail": detail}


def error_response(exc: CbirError) -> JSONResponse:
    return JSONResponse(_body(exc.error, exc.detail), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CbirError)
    async def _cbir(_: Request, exc: CbirError) -> JSONResponse:
        return error_response(exc)

    from index import StoreUnavailableError  # here, not at import: `cbir --help` loads no FAISS

    @app.exception_handler(StoreUnavailableError)
    async def _store(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        # The message names CBIR_MILVUS_URI; the store's client reconnects by itself, so retrying works.
        body = _body("vector_store_unavailable", str(exc))
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
        return JSONResponse(_body("invalid_request", summary or "invalid request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(error, exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the log keeps it for the operator.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal_error", "internal error; see the server log"), status_code=500)

"""The API documentation page (/docs) with its scripts served by the service itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet /docs is blank.
The files come from the PyPI package fastapi-offline (Swagger UI 5, which reads OpenAPI 3.1); only its
files are used: the routes are plain Starlette routes, like FastAPI's own docs routes, so they
stay outside the API's key check, as before (declared public, app/auth/policy.py). No /redoc: ReDoc still
fetches its logo from a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from app.auth.policy import Access, declare

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Serve /docs from local files; the app must be created with docs_url=None and redoc_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    declare(app.router.routes[-1], Access.public)

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    async def swagger_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route("/docs", swagger, include_in_schema=False)
    declare(app.router.routes[-1], Access.public)
    app.add_route(redirect_url, swagger_redirect, include_in_schema=False)
    declare(app.router.routes[-1], Access.public)
    declare_api_keys(app)


SECURITY_SCHEME = "apiKey"


def declare_api_keys(app: FastAPI) -> None:
    """Declare the bearer API-key scheme in the OpenAPI schema, so /docs has an Authorize button and its
    "Try it out" sends the key. Every operation lists it as optional (``{}``): the service is open until a key
    exists, and reads stay open unless CBIR_READ_REQUIRES_KEY is set; app/auth/policy.py decides each
    request."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key made by `cbir keys create` (read, write or admin role).",
        }
        schema["security"] = [{SECURITY_SCHEME: []}, {}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

"""The web page: plain HTML, JavaScript and CSS from app/static, so it works offline with no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.auth.policy import Access, declare, policy

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", dependencies=[policy(Access.public)])
def index_page() -> FileResponse:
    # no-cache: the page is tiny and must never pair an old page with a newer API.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    declare(app.router.routes[-1], Access.public)

"""Who may call what: one app-wide dependency, so a route added later is protected by default.

While no key exists the service is open (and says so at start). Once one does, anything that changes the
collection needs a write key; reads need a read key only when ``read_requires_key`` is set. The method and
the route decide what a request needs: POSTs that only compute (search, denoise) are reads.
"""

from __future__ import annotations

from typing import ClassVar

from fastapi import Request
from fastapi.routing import APIRoute

from app.deps import get_collection
from app.errors import CbirError
from app.services.keys import Role, any_active, role_of

PUBLIC_PATHS = frozenset({"/health", "/metrics", "/"})
READ_ONLY_POSTS = frozenset({"/search", "/denoise"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UnauthorizedError(CbirError):
    status_code = 401
    error = "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(CbirError):
    status_code = 403
    error = "forbidden"


def required_role(request: Request) -> Role | None:
    route = request.scope.get("route")
    path = route.path if isinstance(route, APIRoute) else request.url.path
    if path in PUBLIC_PATHS:
        return None
    if request.method in SAFE_METHODS or path in READ_ONLY_POSTS:
        return Role.read
    return Role.write


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authorize(request: Request) -> None:
    needed = required_role(request)
    if needed is None:
        return
    collection = get_collection(request)
    if not any_active(collection.sessions):
        return
    token = bearer_token(request)
    if token is None:
        if needed is Role.read and not request.app.state.settings.read_requires_key:
            return
        raise UnauthorizedError(
            f"this request needs a {needed} key: send `Authorization: Bearer <key>` "
            "(an admin creates keys with `cbir keys create`)"
        )
    role = role_of(collection.sessions, token)
    if role is None:
        raise UnauthorizedError("the API key is unknown or revoked")
    if not role.allows(needed):
        raise ForbiddenError(f"this request needs a {needed} key; the key sent is a {role} key")

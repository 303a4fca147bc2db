"""Who may call what, declared on each route: ``dependencies=[policy(Access.read, shed=True)]``.

Every route states its access (public, read, write, admin) and whether it is refused early under overload
(load shedding); `check_policies` runs when the app is created and refuses to build an app with a route that
declares none, so a route added later cannot be open by accident. Plain Starlette routes and mounts (the
docs page, static files, /metrics) are outside FastAPI's dependencies: they declare theirs with `declare`.

While no key exists the service is open (and says so at start). Once one does, anything that changes the
collection needs a write key (admin routes an admin key); reads need a read key only when
``read_requires_key`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from app.auth.keys import Role, any_active, role_of
from app.deps import get_collection
from app.errors import ForbiddenError, UnauthorizedError


class Access(StrEnum):
    public = "public"  # anyone, always (health, metrics, the page, the docs)
    read = "read"  # anyone while reads are open; a read key with CBIR_READ_REQUIRES_KEY=true
    write = "write"  # a write key once any key exists
    admin = "admin"  # an admin key once any key exists

    @property
    def role(self) -> Role | None:
        return None if self is Access.public else Role(self.value)


class MissingPolicyError(RuntimeError):
    """A route without a declared policy: a programming error, found when the app is built."""


@dataclass(frozen=True)
class Policy:
    """A route's declared access and load shedding; as a dependency, it checks the request's key."""

    access: Access
    shed: bool = False  # refused with 503 before its body is read while the inference gate is full

    def __call__(self, request: Request) -> None:
        authorize(request, self.access)


def policy(access: Access, *, shed: bool = False) -> Any:
    """What a route puts in its ``dependencies=[...]``: ``policy(Access.write, shed=True)``."""
    return Depends(Policy(access, shed))


def declare(route: BaseRoute, access: Access) -> None:
    """The policy of a plain Starlette route or mount, which FastAPI's dependencies do not reach; only
    public ones exist (nothing there checks a key)."""
    if access is not Access.public:
        raise ValueError(f"{route!r}: a plain route cannot check keys; make it a FastAPI route")
    route.cbir_policy = Policy(access)  # type: ignore[attr-defined]


def policy_of(route: BaseRoute) -> Policy | None:
    """The policy a route declares: a Policy among an APIRoute's dependencies, or `declare`'s mark."""
    if isinstance(route, APIRoute):
        found = [d.dependency for d in route.dependencies if isinstance(d.dependency, Policy)]
        if len(found) > 1:
            raise MissingPolicyError(f"route {route.path} declares {len(found)} policies; keep one")
        return found[0] if found else None
    declared = getattr(route, "cbir_policy", None)
    return declared if isinstance(declared, Policy) else None


def check_policies(app: FastAPI) -> list[tuple[RouteContext, Policy]]:
    """Every route (those of included routers with their prefix) with its policy, in the router's order;
    raises MissingPolicyError for one without."""
    out = []
    for context in iter_route_contexts(app.router.routes):
        found = policy_of(context.original_route)
        if found is None:
            name = context.path or repr(context.original_route)
            raise MissingPolicyError(
                f"route {name} declares no access policy: add "
                "`dependencies=[policy(Access.read)]` (or public/write/admin) to it, or "
                "`declare(route, Access.public)` for a plain route"
            )
        out.append((context, found))
    return out


def matched_policy(policies: list[tuple[RouteContext, Policy]], scope: Scope) -> Policy | None:
    """The policy of the route that will answer `scope` (before routing has run: for the middleware)."""
    for context, found in policies:
        match, _ = context.matches(scope)
        if match is Match.FULL:
            return found
    return None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authorize(request: Request, access: Access) -> None:
    needed = access.role
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

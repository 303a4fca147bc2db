"""Every route of the app's own route table x every kind of caller x both read modes -> the expected status.

The routes come from the app (create_app's route table, included routers and plain routes alike), so a new
route is in the matrix the day it lands; what each route *should* need is written here, independently of
what it declares, so a route declared more open than intended (say GET /images/{id}/file made public, which
would let anyone download every picture with CBIR_READ_REQUIRES_KEY=true) fails twice: its declaration
differs from EXPECTED, and its requests answer 200 where 401 is expected. A route with no declared policy
stops create_app itself (test_a_route_without_a_policy_stops_the_app).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from app.auth.keys import Role, create_key, revoke_key
from app.auth.policy import Access, MissingPolicyError, check_policies
from app.main import create_app
from app.routes import health
from tests.helpers.images import image_bytes
from tests.helpers.settings import tiny_settings

# (method, route template) -> the access the route must need. HEAD is answered as GET (app/head_requests.py).
EXPECTED: dict[tuple[str, str], Access] = {
    ("GET", "/openapi.json"): Access.public,
    ("GET", "/docs"): Access.public,
    ("GET", "/docs/oauth2-redirect"): Access.public,
    ("GET", "/docs-assets"): Access.public,
    ("GET", "/static"): Access.public,
    ("GET", "/"): Access.public,
    ("GET", "/health"): Access.public,
    ("GET", "/metrics"): Access.public,
    ("GET", "/stats"): Access.read,
    ("GET", "/images/{image_id}"): Access.read,
    ("GET", "/images/{image_id}/file"): Access.read,
    ("GET", "/images/{image_id}/thumbnail"): Access.read,
    ("GET", "/images/{image_id}/duplicates"): Access.read,
    ("POST", "/search"): Access.read,
    ("POST", "/denoise"): Access.read,
    ("POST", "/images"): Access.write,
    ("DELETE", "/images/{image_id}"): Access.write,
    ("GET", "/images"): Access.read,
    ("PATCH", "/images/{image_id}"): Access.write,
    ("POST", "/images/delete"): Access.write,
}
# What an allowed request answers (the tiny encoder is no autoencoder: /denoise is a 409 after the key check).
ALLOWED_STATUS: dict[tuple[str, str], set[int]] = {
    ("POST", "/images"): {200, 201},
    ("POST", "/denoise"): {409},
    # Past the key check the matrix sends no JSON body: the route's own validation answers.
    ("PATCH", "/images/{image_id}"): {422},
    ("POST", "/images/delete"): {422},
}
# A concrete path under each mount.
MOUNT_SAMPLES = {"/static": "/static/app.js", "/docs-assets": "/docs-assets/swagger-ui.css"}
CALLERS = ["no key", "read", "write", "admin", "revoked"]
READ_MODES = {"reads open": False, "reads need a key": True}


def app_routes() -> list[tuple[str, str, Access]]:
    """(method, template, declared access) of every route of a freshly created app (nothing is opened)."""
    app = create_app(tiny_settings(Path("/nonexistent-cbir-matrix")))
    out: list[tuple[str, str, Access]] = []
    for context, declared in check_policies(app):
        methods = sorted(context.methods or {"GET"})  # a mount answers GET
        out.extend((method, str(context.path), declared.access) for method in methods if method != "HEAD")
    return out


ROUTES = app_routes()


def expected_status(access: Access, caller: str, reads_need_key: bool) -> int | None:
    """None: allowed (the route's own answer); otherwise the refusal."""
    if access is Access.public:
        return None
    if caller == "no key":
        return None if access is Access.read and not reads_need_key else 401
    if caller == "revoked":
        return 401
    return None if Role(caller).allows(Role(access.value)) else 403


class Service:
    """An app with one key per role (and a revoked one) and one stored picture."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        sessions = client.app.state.collection.sessions  # type: ignore[attr-defined]
        self.keys = {role.value: create_key(sessions, f"{role} key", role).secret for role in Role}
        revoked = create_key(sessions, "revoked key", Role.admin)
        revoke_key(sessions, revoked.row.id)
        self.keys["revoked"] = revoked.secret
        self.seed = 0
        self.image_id = self.add()

    def add(self) -> int:
        self.seed += 1
        response = self.client.post(
            "/images", files={"file": ("a.jpg", image_bytes(self.seed))}, headers=self.headers("admin")
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def headers(self, caller: str) -> dict[str, str]:
        return {} if caller == "no key" else {"Authorization": f"Bearer {self.keys[caller]}"}

    def request(self, method: str, template: str, caller: str) -> Any:
        image_id = self.add() if method == "DELETE" else self.image_id  # a delete must not empty the rest
        path = MOUNT_SAMPLES.get(template, template).replace("{image_id}", str(image_id))
        kwargs: dict[str, Any] = {"headers": self.headers(caller)}
        if method == "POST":
            self.seed += 1
            kwargs["files"] = {"file": ("q.jpg", image_bytes(self.seed))}
        return self.client.request(method, path, **kwargs)


@pytest.fixture(scope="module", params=list(READ_MODES))
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = tiny_settings(tmp_path_factory.mktemp("matrix")).model_copy(
        update={"read_requires_key": READ_MODES[request.param]}
    )
    with TestClient(create_app(settings)) as client:
        yield Service(client)


def test_every_route_is_in_the_matrix_with_the_access_it_must_need() -> None:
    declared = {(method, path): access for method, path, access in ROUTES}
    missing = sorted(set(declared) - set(EXPECTED))
    assert not missing, f"routes missing from EXPECTED (say what access each must need): {missing}"
    gone = sorted(set(EXPECTED) - set(declared))
    assert not gone, f"EXPECTED lists routes the app no longer has: {gone}"
    wrong = {route: (declared[route], want) for route, want in EXPECTED.items() if declared[route] != want}
    assert not wrong, f"routes declaring another access than they must need (declared, expected): {wrong}"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "template"), [(m, t) for m, t, _ in ROUTES])
def test_access(service: Service, method: str, template: str, caller: str) -> None:
    reads_need_key = bool(service.client.app.state.settings.read_requires_key)  # type: ignore[attr-defined]
    refusal = expected_status(EXPECTED[(method, template)], caller, reads_need_key)
    methods = [method, "HEAD"] if method == "GET" else [method]
    for sent in methods:
        response = service.request(sent, template, caller)
        if refusal is not None:
            assert response.status_code == refusal, f"{sent} {template} as {caller}: {response.status_code}"
            if sent != "HEAD":
                assert response.json()["error"] == ("unauthorized" if refusal == 401 else "forbidden")
        else:
            allowed = ALLOWED_STATUS.get((method, template), {200})
            assert response.status_code in allowed, (
                f"{sent} {template} as {caller}: {response.status_code} {response.text[:200]}"
            )


def test_a_route_without_a_policy_stops_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    undeclared = APIRouter()

    @undeclared.get("/undeclared")
    def undeclared_route() -> dict[str, str]:
        return {"open": "to anyone"}

    monkeypatch.setattr(health, "router", APIRouter(routes=[*health.router.routes, *undeclared.routes]))
    with pytest.raises(MissingPolicyError, match="route /undeclared declares no access policy"):
        create_app(tiny_settings(tmp_path))


def test_revoking_every_key_opens_the_service_again(tmp_path: Path) -> None:
    """Keys close the service only while one is active: with the last one revoked it is open as before."""
    with TestClient(create_app(tiny_settings(tmp_path))) as client:
        sessions = client.app.state.collection.sessions  # type: ignore[attr-defined]
        key = create_key(sessions, "only key", Role.admin)
        upload = {"file": ("a.jpg", image_bytes(1))}
        assert client.post("/images", files=upload).status_code == 401
        revoke_key(sessions, key.row.id)
        assert client.post("/images", files=upload).status_code == 201

"""API keys: open until a key exists; then writes need a write key, reads optionally a read key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.auth.keys import Role, create_key, revoke_key
from app.cli import app as cli
from app.config import Settings
from app.main import create_app
from tests.helpers.images import image_bytes


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def post_image(client: TestClient, seed: int, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return client.post("/images", files={"file": ("a.jpg", image_bytes(seed))}, headers=headers or {})


def stored(settings: Settings) -> int:
    return (
        sum(1 for p in settings.images_dir.rglob("*") if p.is_file()) if settings.images_dir.exists() else 0
    )


@pytest.fixture
def keys(client: TestClient) -> dict[Role, str]:
    sessions = client.app.state.collection.sessions  # type: ignore[attr-defined]
    return {role: create_key(sessions, f"{role} test", role).secret for role in Role}


def test_open_while_no_key_exists(client: TestClient) -> None:
    assert post_image(client, 1).status_code == 201


def test_writes_need_a_write_key_and_nothing_is_written_without(
    client: TestClient, keys: dict[Role, str], settings: Settings
) -> None:
    anonymous = post_image(client, 1)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"] == "unauthorized"
    assert "write key" in anonymous.json()["detail"]
    read_only = post_image(client, 1, bearer(keys[Role.read]))
    assert read_only.status_code == 403
    assert read_only.json()["error"] == "forbidden"
    assert post_image(client, 1, bearer("cbir_not-a-key")).status_code == 401
    assert client.get("/stats").json()["count"] == 0
    assert stored(settings) == 0

    created = post_image(client, 1, bearer(keys[Role.write]))
    assert created.status_code == 201
    image_id = created.json()["id"]
    assert client.delete(f"/images/{image_id}", headers=bearer(keys[Role.read])).status_code == 403
    assert client.delete(f"/images/{image_id}").status_code == 401
    assert post_image(client, 2, bearer(keys[Role.admin])).status_code == 201
    assert client.delete(f"/images/{image_id}", headers=bearer(keys[Role.admin])).status_code == 200


def test_reads_stay_open_unless_configured(client: TestClient, keys: dict[Role, str]) -> None:
    assert client.post("/search", files={"file": ("q.jpg", image_bytes(1))}).status_code == 200
    assert client.get("/stats").status_code == 200
    assert client.get("/health").status_code == 200


def test_reads_need_a_key_when_configured(settings: Settings) -> None:
    strict = settings.model_copy(update={"read_requires_key": True})
    with TestClient(create_app(strict)) as client:
        read_key = create_key(client.app.state.collection.sessions, "reader", Role.read).secret  # type: ignore[attr-defined]
        search = {"files": {"file": ("q.jpg", image_bytes(1))}}
        assert client.post("/search", **search).status_code == 401  # type: ignore[arg-type]
        assert client.post("/search", headers=bearer(read_key), **search).status_code == 200  # type: ignore[arg-type]
        assert client.get("/stats").status_code == 401
        assert client.get("/health").status_code == 200


def test_revoked_key_is_refused(client: TestClient, keys: dict[Role, str]) -> None:
    sessions = client.app.state.collection.sessions  # type: ignore[attr-defined]
    new = create_key(sessions, "temporary", Role.write)
    assert post_image(client, 3, bearer(new.secret)).status_code == 201
    revoke_key(sessions, new.row.id)
    refused = post_image(client, 4, bearer(new.secret))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


@pytest.fixture
def cli_env(settings: Settings) -> Iterator[dict[str, str]]:
    yield {"CBIR_DATA_DIR": str(settings.data_dir), "CBIR_DATABASE_URL": settings.db_url}


def test_keys_cli_shows_a_secret_once(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--role", "write", "--name", "shop"], env=cli_env)
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    assert secret.startswith("cbir_")
    listed = runner.invoke(cli, ["keys", "list"], env=cli_env)
    assert "shop" in listed.output
    assert "write" in listed.output
    assert secret not in listed.output
    assert runner.invoke(cli, ["keys", "revoke", "1"], env=cli_env).exit_code == 0
    missing = runner.invoke(cli, ["keys", "revoke", "99"], env=cli_env)
    assert missing.exit_code == 2
    assert "no key with id 99" in missing.output
    bad_role = runner.invoke(cli, ["keys", "create", "--role", "root"], env=cli_env)
    assert bad_role.exit_code != 0

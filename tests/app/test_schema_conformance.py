"""schemathesis against the app's own OpenAPI schema: generated requests never get a 5xx, and every response
matches what the schema promises (status codes, content types, bodies)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.config import Settings
from app.main import create_app
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    """A real server (tiny backbone) on a free port, holding a few images so that ids can exist."""
    data_dir = tmp_path_factory.mktemp("schemathesis") / "data"
    app_settings = Settings(data_dir=data_dir, backbone="tiny_random", max_side=64, device="cpu")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(app_settings), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the uvicorn server to start", 60, alive=thread.is_alive)
    import httpx

    for seed in range(3):
        httpx.post(f"http://127.0.0.1:{port}/images", files={"file": (f"{seed}.jpg", image_bytes(seed))})
    yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    server.should_exit = True
    thread.join(30)


def test_the_api_keeps_its_schema(api_schema: schemathesis.BaseSchema) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin, whose fixture loader breaks on pytest 9.
    failures: list[str] = []
    operations = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Ok):
            operations.append(result.ok())
        else:
            failures.append(f"invalid operation in the schema: {result.err()}")
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case: schemathesis.Case) -> None:
            # A schema cannot say "bytes that decode as an image": generated files are schema-valid noise
            # that the API must refuse (422), so the check that schema-valid data is accepted is left out.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            conforms()
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)

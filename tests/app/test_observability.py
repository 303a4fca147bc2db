"""/metrics as Prometheus scrapes it, request ids, and the JSON log lines that carry them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app import observability
from app.config import Settings
from app.main import create_app
from app.observability import JsonFormatter, TextFormatter, request_id_var
from tests.helpers.images import image_bytes


def scrape(client: TestClient) -> dict[str, list[Sample]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, [(s.name, s.labels) for s in samples])
    return found[0]


def test_metrics_parse_and_count_requests_by_route_template_status_and_inference(client: TestClient) -> None:
    for seed in range(3):
        assert client.post("/images", files={"file": (f"{seed}.jpg", image_bytes(seed))}).status_code == 201
    assert (
        client.post("/search", files={"file": ("q.jpg", image_bytes(1))}, data={"k": "2"}).status_code == 200
    )
    assert client.get("/images/1").status_code == 200
    assert client.get("/images/2").status_code == 200
    assert client.get("/images/999").status_code == 404
    assert client.get("/no/such/page").status_code == 404

    families = scrape(client)

    requests = families["cbir_http_requests"]
    assert value(requests, "cbir_http_requests_total", method="POST", route="/images", status="201") == 3
    assert value(requests, "cbir_http_requests_total", route="/images/{image_id}", status="200") == 2
    assert value(requests, "cbir_http_requests_total", route="/images/{image_id}", status="404") == 1
    assert value(requests, "cbir_http_requests_total", route="<unmatched>", status="404") == 1
    # Label values are templates, never the raw paths asked for.
    assert not [s for s in requests if "999" in s.labels.get("route", "")]

    latency = families["cbir_http_request_duration_seconds"]
    count = value(latency, "cbir_http_request_duration_seconds_count", route="/search", status="200")
    assert count == 1
    assert (
        value(latency, "cbir_http_request_duration_seconds_bucket", route="/search", status="200", le="+Inf")
        == 1
    )

    # Three uploads and one query went through the encoder.
    inference = families["cbir_inference_duration_seconds"]
    assert value(inference, "cbir_inference_duration_seconds_count") == 4
    assert value(families["cbir_inference_images"], "cbir_inference_images_total") == 4
    assert value(families["cbir_inference_queue_depth"], "cbir_inference_queue_depth") == 0
    assert value(families["cbir_collection_images"], "cbir_collection_images") == 3


def test_collection_size_follows_deletes(client: TestClient) -> None:
    for seed in range(2):
        client.post("/images", files={"file": (f"{seed}.jpg", image_bytes(seed))})
    assert client.delete("/images/1").status_code == 200
    families = scrape(client)
    assert value(families["cbir_collection_images"], "cbir_collection_images") == 1
    assert (
        value(families["cbir_http_requests"], "cbir_http_requests_total", method="DELETE", status="200") == 1
    )


def test_a_request_id_is_made_echoed_or_replaced(client: TestClient) -> None:
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    assert client.get("/health").headers["x-request-id"] != made
    given = client.get("/health", headers={"X-Request-ID": "proxy-7f3a.1"})
    assert given.headers["x-request-id"] == "proxy-7f3a.1"
    # Header injection or a flood of bytes is not copied into logs and responses: a fresh id replaces it.
    hostile = client.get("/health", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    assert hostile.headers["x-request-id"] != "a b\tc" + "x" * 200
    assert len(hostile.headers["x-request-id"]) == 32


def test_errors_carry_the_request_id_too(client: TestClient) -> None:
    response = client.get("/images/12345", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-me"
    assert response.json()["error"] == "not_found"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every `cbir.*` log line of the test, formatted as `cbir serve` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cbir")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class SteppingClock:
    """perf_counter that advances a fixed step per call: a request's duration is known exactly."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


def test_access_log_is_json_with_the_request_id_route_status_and_duration(
    client: TestClient, json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "time", SteppingClock(0.25))  # start and end: 250 ms apart
    response = client.get("/images/77", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    [entry] = [
        line for line in lines if line["logger"] == "cbir.access" and line.get("request_id") == "req-42"
    ]
    assert entry["level"] == "info"
    assert entry["message"] == "GET /images/77 404"
    assert entry["route"] == "/images/{image_id}"
    assert entry["status"] == 404
    assert entry["duration_ms"] == 250.0
    assert entry["time"].endswith("+00:00")


def test_json_formatter_keeps_extras_and_exceptions_on_one_line() -> None:
    record = logging.LogRecord("cbir.x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    record.images = 3
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(record)
        text = TextFormatter().format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed here"
    assert entry["request_id"] == "rid-1"
    assert entry["images"] == 3
    assert "ValueError: boom" in entry["exception"]
    assert "[request rid-1]" in text


def test_an_unhandled_error_is_a_json_500_with_the_request_id_logged_and_counted(
    settings: Settings, json_log: io.StringIO
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "bug-1"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "bug-1"
        assert response.json() == {"error": "internal_error", "detail": "internal error; see the server log"}
        families = scrape(client)
    assert value(families["cbir_http_requests"], "cbir_http_requests_total", route="/boom", status="500") == 1
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    [error] = [line for line in lines if line["logger"] == "cbir.errors"]
    assert error["request_id"] == "bug-1"
    assert "RuntimeError: a bug" in error["exception"]

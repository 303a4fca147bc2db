"""What an operator watches: Prometheus metrics, JSON logs, and a request id that ties the two together.

Each app owns its own metrics registry (never prometheus-client's global one), so several apps in one process
— the tests build many — never collide, and ``/metrics`` shows exactly one service. Requests are labelled by
route *template* (``/images/{image_id}``), never by raw path: one label value per endpoint, however many ids
are asked for. The request id is taken from a well-formed ``X-Request-ID`` (a proxy's) or made here, echoed
back, and put on every log line written while the request is handled, so a person who quotes the id from an
error on the page leads the operator to the log lines of that request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
# Accepted from the client only when it is short and plain: it goes into logs and response headers verbatim.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED = "<unmatched>"
QUIET_ROUTES = frozenset({"/health", "/metrics"})

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("cbir_request_id", default=None)

access_log = logging.getLogger("cbir.access")
error_log = logging.getLogger("cbir.errors")

# Latency buckets (seconds) spanning a cached thumbnail (~1 ms) to a CPU search on a large image (~seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# -- metrics -------------------------------------------------------------------------------------------------
class InferenceMeter:
    """Where the collection reports its forward passes (the wait for a slot is the gate's, and not timed).

    The base class records nothing, so a collection opened by the CLI (no ``/metrics`` to show) pays nothing.
    """

    @contextmanager
    def running(self, images: int) -> Iterator[None]:
        yield


NO_METER = InferenceMeter()


class Metrics(InferenceMeter):
    """The service's metrics, in a registry of its own."""

    def __init__(self, collection_size: Callable[[], float], queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cbir_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cbir_http_request_duration_seconds",
            "Time from request to the end of the response, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "cbir_http_requests_in_progress", "Requests being handled now.", registry=self.registry
        )
        self.inference = Histogram(
            "cbir_inference_duration_seconds",
            "Forward passes of the encoder (a query, an upload or a batch), without the wait for a slot.",
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.inference_images = Counter(
            "cbir_inference_images", "Images embedded by the encoder.", registry=self.registry
        )
        waiting = Gauge(
            "cbir_inference_queue_depth",
            "Requests waiting for an inference slot (beyond CBIR_MAX_QUEUE they are answered 503).",
            registry=self.registry,
        )
        waiting.set_function(queue_depth)
        size = Gauge(
            "cbir_collection_images", "Images in the search index (searchable now).", registry=self.registry
        )
        size.set_function(collection_size)

    @contextmanager
    def running(self, images: int) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.inference.observe(time.perf_counter() - started)
            self.inference_images.inc(images)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = {"method": method, "route": route, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.latency.labels(**labels).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(app: FastAPI, scope: Scope) -> str:
    """The route's template (``/images/{image_id}``), so labels stay bounded whatever paths are asked for."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    request_path = scope.get("path", "")
    for candidate in app.routes:
        if isinstance(candidate, Mount) and request_path.startswith(candidate.path + "/"):
            return candidate.path + "/{path}"
    return UNMATCHED


# -- the middleware ------------------------------------------------------------------------------------------
def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID_RE.match(text) else None
    return None


class ObservabilityMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware): sees every response, streamed ones included, and adds no task."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, metrics: Metrics) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            # Answered here rather than by Starlette's outermost error middleware, which runs outside this
            # one: so the 500 carries the request id too, and the traceback is logged with it.
            error_log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started_response:
                raise
            status = 500
            body = json.dumps({"error": "internal_error", "detail": "internal error; see the server log"})
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body.encode()})
        finally:
            seconds = time.perf_counter() - started
            self.metrics.in_progress.dec()
            route = route_template(self.fastapi_app, scope)
            method = str(scope.get("method", ""))
            self.metrics.observe_request(method, route, status, seconds)
            # Probes and scrapes arrive every few seconds: worth a line only when they fail or at debug.
            quiet = route in QUIET_ROUTES and status < 400
            access_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %d",
                method,
                scope.get("path", ""),
                status,
                extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 2)},
            )
            request_id_var.reset(token)


def install(app: FastAPI) -> Metrics:
    """Adds ``/metrics`` and the middleware; call after every other middleware so it is the outermost and
    counts the responses they answer themselves (a 413 before the body is read). The lifespan hands the
    metrics to the collection it opens (``collection.meter``)."""

    def collection_size() -> float:
        collection = getattr(app.state, "collection", None)
        return float(collection.index.ntotal) if collection is not None else 0.0

    def queue_depth() -> float:
        collection = getattr(app.state, "collection", None)
        return float(collection.gate.waiting) if collection is not None else 0.0

    from app.auth.policy import (  # here: app.auth.policy needs the collection, which imports this module
        Access,
        policy,
    )

    metrics = Metrics(collection_size, queue_depth)
    app.state.metrics = metrics

    @app.get("/metrics", include_in_schema=False, dependencies=[policy(Access.public)])
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(ObservabilityMiddleware, fastapi_app=app, metrics=metrics)
    return metrics


# -- logging -------------------------------------------------------------------------------------------------
# Attributes every LogRecord has; anything else on a record came from `extra=` and is written as a field
# (except uvicorn's `color_message`, the message again with terminal colour codes).
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors (Loki, CloudWatch, journald) parse without rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key != "request_id" and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a person at a terminal; keeps the request id, which is what the JSON form is mostly for."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [request {request_id}]" if request_id else line


def configure_logging(level: str, fmt: str = "json") -> None:
    """Route every logger (uvicorn's included: run it with ``log_config=None``) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

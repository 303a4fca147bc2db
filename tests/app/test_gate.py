"""Admission control: a full queue answers 503 with Retry-After at once instead of piling up."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.gate import InferenceGate, ServiceBusyError
from app.main import create_app
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_until


def test_bounded_request_is_refused_when_the_queue_is_full() -> None:
    gate = InferenceGate(concurrency=1, max_waiting=1, timeout=5)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with gate.slot():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    waiter = threading.Thread(target=lambda: gate.slot().__enter__())  # takes the one waiting place
    waiter.daemon = True
    waiter.start()
    wait_until(lambda: gate.waiting >= 1, "the second request to wait for the slot", 30)
    assert (gate.running, gate.waiting) == (1, 1)
    with pytest.raises(ServiceBusyError, match="busy"), gate.slot():
        pass
    release.set()
    holder.join(5)


def test_waiting_too_long_is_refused() -> None:
    gate = InferenceGate(concurrency=1, max_waiting=4, timeout=0.05)
    with gate.slot(), pytest.raises(ServiceBusyError, match="within"), gate.slot():
        pass
    assert (gate.running, gate.waiting) == (0, 0)


def test_api_answers_503_with_retry_after_then_recovers(settings: Settings) -> None:
    busy = settings.model_copy(update={"max_queue": 0, "inference_workers": 1})
    with TestClient(create_app(busy)) as client:
        gate: InferenceGate = client.app.state.collection.gate  # type: ignore[attr-defined]
        with gate.slot(bounded=False):
            search = client.post("/search", files={"file": ("q.jpg", image_bytes(1))})
            upload = client.post("/images", files={"file": ("a.jpg", image_bytes(1))})
        for response in (search, upload):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "2"
            assert response.json()["error"] == "busy"
        assert client.get("/stats").json()["count"] == 0
        assert client.post("/images", files={"file": ("a.jpg", image_bytes(1))}).status_code == 201


def test_a_full_gate_refuses_before_reading_the_body(settings: Settings) -> None:
    busy = settings.model_copy(update={"max_queue": 0, "inference_workers": 1})
    with TestClient(create_app(busy)) as client:
        gate: InferenceGate = client.app.state.collection.gate  # type: ignore[attr-defined]
        with gate.slot(bounded=False):
            # Not even multipart: parsed, this body would be a 422; refused unread, it is a 503.
            refused = client.post("/search", content=b"x" * 1000, headers={"content-type": "text/plain"})
        assert refused.status_code == 503 and refused.json()["error"] == "busy"
        assert client.post("/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 422

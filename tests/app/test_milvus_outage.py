"""Milvus unreachable: requests get 503 naming CBIR_MILVUS_URI, writes are refused rather than half-done,
and the service recovers by itself when Milvus is back (a real `milvus-lite server`, killed and restarted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers.images import image_bytes
from tests.helpers.replicas import NOT_YET, milvus_lite
from tests.helpers.settings import tiny_settings
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow


def test_an_outage_is_a_503_refuses_writes_and_heals_by_itself(tmp_path: Path) -> None:
    with milvus_lite(tmp_path / "milvus") as milvus:
        settings = tiny_settings(tmp_path).model_copy(
            update={"vector_store": "milvus", "milvus_uri": milvus.uri}
        )
        with TestClient(create_app(settings)) as client:
            first = client.post("/images", files={"file": ("a.jpg", image_bytes(1), "image/jpeg")})
            assert first.status_code == 201, first.text
            milvus.kill()

            search = client.post("/search", files={"file": ("q.jpg", image_bytes(1), "image/jpeg")})
            assert search.status_code == 503
            assert search.json()["error"] == "vector_store_unavailable"
            assert "CBIR_MILVUS_URI" in search.json()["detail"] and milvus.uri in search.json()["detail"]
            refused = client.post("/images", files={"file": ("b.jpg", image_bytes(2), "image/jpeg")})
            assert refused.status_code == 503
            assert client.delete(f"/images/{first.json()['id']}").status_code == 503

            milvus.start()
            healed = wait_for(
                lambda: (
                    r
                    if (
                        r := client.post("/search", files={"file": ("q.jpg", image_bytes(1), "image/jpeg")})
                    ).status_code
                    == 200
                    else None
                ),
                "searches to succeed again once Milvus is back",
                60,
                ignoring=NOT_YET,
                interval=0.1,
            )
            assert healed.json()["results"][0]["id"] == first.json()["id"]
            # The refused upload left nothing behind: the same picture is new now, and the delete did not
            # happen.
            again = client.post("/images", files={"file": ("b.jpg", image_bytes(2), "image/jpeg")})
            assert again.status_code == 201, again.text
            stats = client.get("/stats").json()
            assert stats["count"] == stats["indexed"] == 2

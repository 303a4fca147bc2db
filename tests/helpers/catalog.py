"""Helpers of the collection-management tests: a small collection with names in folders and metadata."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers.images import image_bytes

KINDS = ("cat", "dog")


def fill(client: TestClient, n: int, seed: int = 0) -> list[int]:
    """n uploads named cat-0.jpg, dog-1.jpg, cat-2.jpg, ... with metadata n, kind, even (and one note)."""
    ids = []
    for i in range(n):
        meta: dict[str, Any] = {"n": i, "kind": KINDS[i % 2], "even": i % 2 == 0}
        if i == 1:
            meta["note"] = "first dog"
            meta["day"] = "2026-03-15"
        response = client.post(
            "/images",
            files={"file": (f"{KINDS[i % 2]}-{i}.jpg", image_bytes(seed + i), "image/jpeg")},
            data={"metadata": json.dumps(meta)},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def listing(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/images", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids_of(body: dict[str, Any]) -> list[int]:
    return [image["id"] for image in body["images"]]

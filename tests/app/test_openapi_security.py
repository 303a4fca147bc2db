"""The OpenAPI schema declares the bearer API-key scheme, so /docs offers Authorize and sends the key."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_schema_declares_bearer_keys(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key made by `cbir keys create` (read, write or admin role).",
    }
    assert {"apiKey": []} in schema["security"]
    paths = schema["paths"]
    assert {"get", "patch"} <= set(paths["/images/{image_id}"]) and "post" in paths["/images/delete"]
    search = paths["/search"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(search)

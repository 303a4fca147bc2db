"""The REST API on the tiny backbone: contract, errors, and that bad input never writes anything."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from index import available_stores
from tests.helpers.hostile import png_header
from tests.helpers.images import image_bytes
from tests.helpers.settings import tiny_settings


@pytest.fixture(params=available_stores())
def settings(tmp_path: Path, database_url: str | None, request: pytest.FixtureRequest) -> Settings:
    """The API over every registered vector store: FAISS, and Milvus (Milvus Lite in the test's folder)."""
    return tiny_settings(tmp_path, database_url).model_copy(update={"vector_store": request.param})


def upload(client: TestClient, data: bytes, name: str = "a.jpg", **form: str):  # type: ignore[no-untyped-def]
    return client.post("/images", files={"file": (name, data, "image/jpeg")}, data=form)


def stored_files(settings: Settings) -> list[Path]:
    return [p for p in settings.images_dir.rglob("*") if p.is_file()] if settings.images_dir.exists() else []


def test_health_and_docs(client: TestClient) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ready", "model_loaded": True, "index_loaded": True}
    html = client.get("/docs")
    assert html.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in html.text
    assert "https://" not in html.text, "the docs must work offline: nothing from a CDN"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert client.get(f"/docs-assets/{asset}").status_code == 200, asset
    assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/images",
        "/search",
        "/images/{image_id}",
        "/images/{image_id}/file",
        "/health",
        "/stats",
    } <= set(paths)


def test_upload_get_file_and_duplicate(client: TestClient) -> None:
    data = image_bytes(1)
    first = upload(client, data, "cat.jpg", metadata=json.dumps({"sku": "A-1", "tags": ["x"]}))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["duplicate"] is False
    image = body["image"]
    assert image["original_name"] == "cat.jpg"
    assert (image["width"], image["height"], image["format"]) == (96, 64, "JPEG")
    assert image["size_bytes"] == len(data)
    assert image["metadata"] == {"sku": "A-1", "tags": ["x"]}

    again = upload(client, data, "other-name.jpg")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["id"] == body["id"]

    fetched = client.get(f"/images/{body['id']}")
    assert fetched.json()["sha256"] == image["sha256"]
    file = client.get(image["url"])
    assert file.status_code == 200
    assert file.headers["content-type"] == "image/jpeg"
    assert file.content == data
    assert client.get("/stats").json()["count"] == 1


def test_search_returns_the_image_itself_first(client: TestClient) -> None:
    ids = [
        upload(client, image_bytes(seed), f"{seed}.jpg", metadata=json.dumps({"n": seed})).json()["id"]
        for seed in range(6)
    ]
    response = client.post("/search", files={"file": ("q.jpg", image_bytes(3))}, data={"k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["k"] == 3
    assert len(body["results"]) == 3
    top = body["results"][0]
    assert top["id"] == ids[3]
    assert top["score"] > 0.999
    assert top["metadata"] == {"n": 3}
    assert top["url"] == f"/images/{ids[3]}/file"
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_k_bounds_and_default(client: TestClient) -> None:
    for seed in range(12):
        upload(client, image_bytes(seed), f"{seed}.jpg")
    default = client.post("/search", files={"file": ("q.jpg", image_bytes(0))})
    assert len(default.json()["results"]) == 10
    for bad in ("0", "101", "ten"):
        response = client.post("/search", files={"file": ("q.jpg", image_bytes(0))}, data={"k": bad})
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"
        assert "k" in response.json()["detail"]


def test_search_on_empty_collection(client: TestClient) -> None:
    response = client.post("/search", files={"file": ("q.jpg", image_bytes(0))})
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_delete_removes_from_index_database_and_disk(client: TestClient, settings: Settings) -> None:
    keep = upload(client, image_bytes(1)).json()["id"]
    gone = upload(client, image_bytes(2)).json()["id"]
    assert len(stored_files(settings)) == 2
    response = client.delete(f"/images/{gone}")
    assert response.status_code == 200
    assert response.json() == {"id": gone, "deleted": True}
    assert client.get(f"/images/{gone}").status_code == 404
    assert client.get(f"/images/{gone}/file").status_code == 404
    assert client.delete(f"/images/{gone}").status_code == 404
    hits = client.post("/search", files={"file": ("q.jpg", image_bytes(2))}).json()["results"]
    assert [hit["id"] for hit in hits] == [keep]
    assert len(stored_files(settings)) == 1
    assert client.get("/stats").json()["indexed"] == 1


def test_missing_image_is_a_json_404(client: TestClient) -> None:
    response = client.get("/images/12345")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no image with id 12345"}
    assert client.get("/images/abc").status_code == 422


def test_bad_metadata_is_rejected_before_anything_is_written(client: TestClient, settings: Settings) -> None:
    for raw, fragment in (("{not json", "not valid JSON"), ("[1, 2]", "JSON object")):
        response = upload(client, image_bytes(1), metadata=raw)
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_metadata"
        assert fragment in response.json()["detail"]
    assert client.get("/stats").json()["count"] == 0
    assert stored_files(settings) == []


def test_bad_images_get_4xx_json_and_write_nothing(client: TestClient, settings: Settings) -> None:
    truncated = image_bytes(5, size=(400, 300))[:2000]
    cases = {
        "text.jpg": (b"hello, I am not an image\n" * 10, 422),
        "truncated.jpg": (truncated, 422),
        "empty.jpg": (b"", 422),
        "bomb.png": (png_header(20000, 20000), 413),
    }
    for name, (data, status) in cases.items():
        for endpoint in ("/images", "/search"):
            response = client.post(endpoint, files={"file": (name, data, "image/jpeg")})
            assert response.status_code == status, (name, endpoint, response.text)
            body = response.json()
            assert set(body) == {"error", "detail"}
            assert body["detail"], name
    stats = client.get("/stats").json()
    assert (stats["count"], stats["indexed"]) == (0, 0)
    assert stored_files(settings) == []
    assert client.get("/health").status_code == 200
    ok = upload(client, image_bytes(9))
    assert ok.status_code == 201


def test_upload_over_the_size_limit_is_413(settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(small)) as client:
        response = upload(client, image_bytes(1, size=(300, 300)))
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]
        huge = b"x" * 200_000
        response = client.post("/images", files={"file": ("big.jpg", huge)})
        assert response.status_code == 413


def test_png_and_other_formats_are_accepted(client: TestClient) -> None:
    picture = Image.new("RGBA", (50, 40), (10, 200, 30, 128))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    response = client.post(
        "/images", files={"file": ("x.bin", buffer.getvalue(), "application/octet-stream")}
    )
    assert response.status_code == 201
    assert response.json()["image"]["format"] == "PNG"
    assert client.get(response.json()["image"]["url"]).headers["content-type"] == "image/png"


def test_collection_survives_restart(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        ids = [upload(client, image_bytes(seed)).json()["id"] for seed in range(3)]
    with TestClient(create_app(settings)) as client:
        assert client.get("/stats").json()["count"] == 3
        top = client.post("/search", files={"file": ("q.jpg", image_bytes(2))}).json()["results"][0]
        assert top["id"] == ids[2]


def test_an_upload_without_a_file_part_says_how_to_send_one(client: TestClient) -> None:
    for request in (
        {"data": {"file": "photo.jpg"}},  # a text field where the file belongs
        {"json": {"file": "photo.jpg"}},  # JSON instead of multipart
        {},
    ):
        for path in ("/images", "/search"):
            response = client.post(path, **request)  # type: ignore[arg-type]
            assert response.status_code == 422, (path, request)
            body = response.json()
            assert body["error"] == "invalid_request" and "multipart/form-data" in body["detail"], body
    assert "multipart" not in client.post("/search", files={"file": ("q.jpg", b"x")}, data={"k": "0"}).text


def test_a_deleted_id_is_never_handed_out_again_nor_its_cached_file(client: TestClient) -> None:
    """Before AUTOINCREMENT, SQLite gave the next upload the deleted largest id, and a browser's cached copy
    of the deleted picture (or another process's index entry) stood for the new one."""
    first = upload(client, image_bytes(31)).json()
    old_file = client.get(first["image"]["url"])
    assert client.delete(f"/images/{first['id']}").status_code == 200
    second = upload(client, image_bytes(32)).json()
    assert second["id"] > first["id"]
    assert client.get(f"/images/{first['id']}").status_code == 404
    new_file = client.get(second["image"]["url"])
    assert new_file.headers["etag"] == f'"{second["image"]["sha256"]}"'
    assert old_file.headers["etag"] != new_file.headers["etag"]
    stale = client.get(second["image"]["url"], headers={"If-None-Match": old_file.headers["etag"]})
    assert stale.status_code == 200 and stale.content == image_bytes(32)

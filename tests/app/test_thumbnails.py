"""GET /images/{id}/thumbnail: bounded sizes, made once, cached on disk and by browsers (ETag)."""

from __future__ import annotations

import io
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from tests.helpers.images import image_bytes


def add(client: TestClient, data: bytes) -> int:
    response = client.post("/images", files={"file": ("photo.jpg", data)})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def cached(settings: Settings) -> list[Path]:
    root = settings.data_dir / "thumbnails"
    return sorted(p for p in root.rglob("*.jpg")) if root.exists() else []


def test_thumbnail_is_a_jpeg_of_the_asked_long_side_with_cache_headers(
    client: TestClient, settings: Settings
) -> None:
    image_id = add(client, image_bytes(1, size=(300, 200)))
    response = client.get(f"/images/{image_id}/thumbnail", params={"size": 128})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "JPEG"
    assert picture.size == (128, 85)
    default = client.get(f"/images/{image_id}/thumbnail")
    assert Image.open(io.BytesIO(default.content)).size == (256, 171)
    assert default.headers["etag"] != response.headers["etag"]


def test_thumbnail_is_made_once_then_served_from_disk(client: TestClient, settings: Settings) -> None:
    image_id = add(client, image_bytes(2, size=(300, 200)))
    first = client.get(f"/images/{image_id}/thumbnail", params={"size": 64})
    [path] = cached(settings)
    made = path.stat().st_mtime_ns
    again = client.get(f"/images/{image_id}/thumbnail", params={"size": 64})
    assert again.content == first.content
    assert path.stat().st_mtime_ns == made
    assert cached(settings) == [path]


def test_if_none_match_answers_304_without_a_body(client: TestClient) -> None:
    image_id = add(client, image_bytes(3))
    tag = client.get(f"/images/{image_id}/thumbnail").headers["etag"]
    fresh = client.get(f"/images/{image_id}/thumbnail", headers={"If-None-Match": f'W/"other", {tag}'})
    assert fresh.status_code == 304
    assert fresh.content == b""
    assert fresh.headers["etag"] == tag
    stale = client.get(f"/images/{image_id}/thumbnail", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200 and stale.content


def test_never_upscales_a_small_original(client: TestClient) -> None:
    image_id = add(client, image_bytes(4, size=(96, 64)))
    response = client.get(f"/images/{image_id}/thumbnail", params={"size": 512})
    assert Image.open(io.BytesIO(response.content)).size == (96, 64)


def test_sizes_outside_the_list_are_refused_with_the_list(client: TestClient, settings: Settings) -> None:
    image_id = add(client, image_bytes(5))
    for size in ("100", "4096", "0", "-1"):
        response = client.get(f"/images/{image_id}/thumbnail", params={"size": size})
        assert response.status_code == 422, size
        assert "64, 128, 256, 512" in response.json()["detail"]
    assert client.get(f"/images/{image_id}/thumbnail", params={"size": "big"}).status_code == 422
    assert cached(settings) == []


def test_unknown_image_is_404_and_delete_removes_its_thumbnails(
    client: TestClient, settings: Settings
) -> None:
    assert client.get("/images/4242/thumbnail").json()["error"] == "not_found"
    image_id = add(client, image_bytes(6))
    for size in (64, 128):
        assert client.get(f"/images/{image_id}/thumbnail", params={"size": size}).status_code == 200
    assert len(cached(settings)) == 2
    assert client.delete(f"/images/{image_id}").status_code == 200
    assert cached(settings) == []
    assert client.get(f"/images/{image_id}/thumbnail").status_code == 404

"""HEAD on every GET route: the GET's status and headers, no body; other methods are left alone."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.helpers.images import image_bytes


def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    added = client.post("/images", files={"file": ("a.jpg", image_bytes(1))})
    assert added.status_code == 201, added.text
    image_id = added.json()["id"]
    for path in ("/health", "/stats", f"/images/{image_id}", f"/images/{image_id}/file", "/"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
    assert client.head(f"/images/{image_id}/file").headers["content-length"] == str(len(image_bytes(1)))
    assert client.head("/images/999").status_code == 404
    assert client.get("/health").content, "GET still has its body"

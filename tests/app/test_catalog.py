"""Managing a collection over HTTP: listing with cursors and filters, merge patches, duplicates, deletes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from index import available_stores
from tests.app.test_api import upload
from tests.helpers.catalog import fill, ids_of, listing
from tests.helpers.images import image_bytes
from tests.helpers.settings import tiny_settings


@pytest.fixture(params=available_stores())
def settings(tmp_path: Path, database_url: str | None, request: pytest.FixtureRequest) -> Settings:
    """Every vector store: FAISS, and Milvus (Milvus Lite in the test's folder)."""
    return tiny_settings(tmp_path, database_url).model_copy(update={"vector_store": request.param})


def test_cursor_paging_visits_every_image_once_in_both_orders(client: TestClient) -> None:
    stored = fill(client, 7)
    for order, expected in (("asc", sorted(stored)), ("desc", sorted(stored, reverse=True))):
        seen: list[int] = []
        after: str | None = None
        pages = 0
        while True:
            body = listing(client, limit=3, order=order, **({"after": after} if after else {}))
            assert body["total"] == 7
            seen += [image["id"] for image in body["images"]]
            pages += 1
            after = body["next"]
            if after is None:
                break
        assert seen == expected and pages == 3, order


def test_a_deletion_between_pages_skips_nothing(client: TestClient) -> None:
    stored = fill(client, 6)
    first = listing(client, limit=3)
    assert client.delete(f"/images/{stored[0]}").status_code == 200  # on the page already read
    rest = listing(client, limit=3, after=first["next"])
    assert ids_of(first) + ids_of(rest) == stored[:6]
    assert rest["total"] == 5 and rest["next"] is None


def test_listing_filters_and_path_prefix(client: TestClient) -> None:
    fill(client, 8)  # names cat-0.jpg, dog-1.jpg, ...; metadata n, kind, even
    cats = listing(client, path_prefix="cat-")
    assert cats["total"] == 4 and all(i["path"].startswith("cat-") for i in cats["images"])
    assert listing(client, path_prefix="ca_-")["total"] == 0, "LIKE wildcards are literal"
    flt = {"n": {"$gte": 2, "$lt": 6}, "even": True}
    body = listing(client, filter=json.dumps(flt))
    assert sorted(i["metadata"]["n"] for i in body["images"]) == [2, 4]
    assert listing(client, filter=json.dumps({"kind": {"$in": ["dog", "bird"]}}))["total"] == 4
    assert listing(client, filter=json.dumps({"note": {"$exists": True}}))["total"] == 1
    assert listing(client, filter=json.dumps({"note": {"$exists": False}}))["total"] == 7
    assert listing(client, filter=json.dumps({"n": "3"}))["total"] == 0, "a string never equals a number"
    assert listing(client, filter=json.dumps({"format": "jpeg", "width": 96}))["total"] == 8
    assert listing(client, filter=json.dumps({"created_at": {"$gte": "2000-01-01"}}))["total"] == 8
    assert listing(client, filter=json.dumps({"created_at": {"$lt": "2000-01-01T00:00:00Z"}}))["total"] == 0
    assert listing(client, filter=json.dumps({"day": {"$gte": "2026-03-01"}}))["total"] == 1


def test_listing_refuses_what_it_does_not_know(client: TestClient) -> None:
    fill(client, 1)
    cases = {
        "limit=2&colour=red": "colour",
        "filter=%7Bnope": "not valid JSON",
        "filter=" + json.dumps({"n": {"$near": 1}}): "$near",
        "filter=" + json.dumps({"created_at": {"$gte": "yesterday"}}): "ISO-8601",
        "filter=" + json.dumps({"n": {"$gte": [1]}}): "$gte",
        "after=abc": "cursor",
        "order=sideways": "order",
    }
    for query, needle in cases.items():
        response = client.get(f"/images?{query}")
        assert response.status_code == 422, query
        assert needle in response.json()["detail"], (query, response.json())


def test_merge_patch_sets_replaces_and_removes_keys(client: TestClient) -> None:
    data = image_bytes(3)
    image_id = upload(client, data, metadata=json.dumps({"a": 1, "b": {"c": 2, "d": 3}, "e": "x"})).json()[
        "id"
    ]
    patched = client.patch(
        f"/images/{image_id}", json={"metadata": {"a": None, "b": {"c": None, "z": 9}, "f": [1]}}
    )
    assert patched.status_code == 200, patched.text
    expected = {"b": {"d": 3, "z": 9}, "e": "x", "f": [1]}
    assert patched.json()["metadata"] == expected
    assert client.get(f"/images/{image_id}").json()["metadata"] == expected
    assert client.patch(f"/images/{image_id}", json={"metadata": {}, "extra": 1}).status_code == 422
    assert client.patch(f"/images/{image_id}", json={"metadata": [1]}).status_code == 422
    assert client.patch("/images/999999", json={"metadata": {"a": 1}}).status_code == 404


def test_a_duplicate_upload_says_what_became_of_its_metadata(client: TestClient) -> None:
    data = image_bytes(4)
    first = upload(client, data, metadata=json.dumps({"sku": "A-1", "price": 5})).json()
    kept = upload(client, data, metadata=json.dumps({"sku": "B-2"}))
    assert kept.status_code == 200
    assert kept.json()["metadata_applied"] is False and "on_duplicate=merge" in kept.json()["hint"]
    assert kept.json()["image"]["metadata"] == {"sku": "A-1", "price": 5}
    merged = upload(client, data, metadata=json.dumps({"sku": "B-2"}), on_duplicate="merge").json()
    assert merged["metadata_applied"] is True and merged["image"]["metadata"] == {"sku": "B-2", "price": 5}
    replaced = upload(client, data, metadata=json.dumps({"x": 1}), on_duplicate="replace").json()
    assert replaced["image"]["metadata"] == {"x": 1} and replaced["id"] == first["id"]
    plain = upload(client, data).json()
    assert plain["duplicate"] is True and plain["metadata_applied"] is None
    assert upload(client, data, metadata="{}", on_duplicate="sometimes").status_code == 422


def test_image_view_has_path_urls_and_a_download_name(client: TestClient) -> None:
    body = upload(client, image_bytes(5), "C:\\Users\\me\\shop/boot.jpg").json()["image"]
    assert body["path"] == "boot.jpg", "path components of an upload's name are stripped"
    assert body["thumbnail_url"] == f"/images/{body['id']}/thumbnail?v={body['sha256'][:12]}"
    assert client.get(body["thumbnail_url"]).status_code == 200
    download = client.get(body["url"])
    assert 'filename="boot.jpg"' in download.headers["content-disposition"]


def test_bulk_delete_by_ids_filter_and_prefix(client: TestClient) -> None:
    stored = fill(client, 8)
    by_ids = client.post("/images/delete", json={"ids": [stored[0], stored[1], 10**9]})
    assert by_ids.status_code == 200 and by_ids.json()["deleted"] == 2
    by_filter = client.post("/images/delete", json={"filter": {"n": {"$gte": 6}}}).json()
    assert by_filter["deleted"] == 2 and sorted(by_filter["ids"]) == stored[6:8]
    by_prefix = client.post("/images/delete", json={"path_prefix": "dog-"}).json()
    assert by_prefix["deleted"] == 2  # dog-3 and dog-5 (dog-1 went by id, dog-7 by filter)
    left = listing(client)
    assert sorted(ids_of(left)) == [stored[2], stored[4]]
    stats = client.get("/stats").json()
    assert stats["count"] == stats["indexed"] == 2, "the index follows the database"
    found: dict[str, Any] = client.post(
        "/search", files={"file": ("q.jpg", image_bytes(100), "image/jpeg")}
    ).json()
    assert {hit["id"] for hit in found["results"]} == {stored[2], stored[4]}


def test_bulk_delete_needs_exactly_one_selector(client: TestClient) -> None:
    fill(client, 2)
    refused: list[dict[str, Any]] = [
        {},
        {"ids": [1], "path_prefix": "a"},
        {"filter": {}},
        {"ids": [1], "x": 1},
    ]
    for body in refused:
        response = client.post("/images/delete", json=body)
        assert response.status_code == 422, body
    assert listing(client)["total"] == 2, "nothing deleted by a refused request"

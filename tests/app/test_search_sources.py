"""POST /search by file, id, vector or url; filters inside the vector search; threshold, offset, 422s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.files import fetch
from app.main import create_app
from index import available_stores
from tests.helpers.catalog import fill
from tests.helpers.images import image_bytes
from tests.helpers.search import serve_bytes
from tests.helpers.settings import tiny_settings

PLAIN = {"query_expansion": 0, "database_augmentation": 0}


@pytest.fixture(params=available_stores())
def settings(tmp_path: Path, database_url: str | None, request: pytest.FixtureRequest) -> Settings:
    """Every vector store: FAISS, and Milvus (Milvus Lite in the test's folder)."""
    return tiny_settings(tmp_path, database_url).model_copy(update={"vector_store": request.param})


def search_json(client: TestClient, **body: Any) -> Any:
    return client.post("/search", json=body)


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def stored_vector(client: TestClient, image_id: int) -> list[float]:
    row = client.app.state.collection.get(image_id)  # type: ignore[attr-defined]
    return np.frombuffer(row.vector, dtype="<f4").tolist()


def test_more_like_this_leaves_the_image_out(client: TestClient) -> None:
    stored = fill(client, 12)
    found = ids(search_json(client, id=stored[3], k=5))
    assert len(found) == 5 and stored[3] not in found
    multipart = ids(client.post("/search", data={"id": str(stored[3]), "k": "5"}))
    assert multipart == found, "multipart and JSON bodies ask the same question"
    assert search_json(client, id=10**9).status_code == 404


def test_search_by_vector_finds_its_image_and_checks_the_dimension(client: TestClient) -> None:
    stored = fill(client, 6)
    vector = stored_vector(client, stored[2])
    response = search_json(client, vector=vector, k=3, **PLAIN)
    assert ids(response)[0] == stored[2] and response.json()["results"][0]["score"] > 0.999
    scaled = ids(search_json(client, vector=[3 * v for v in vector], k=3, **PLAIN))
    assert scaled == ids(response), "the vector is L2-normalised first"
    assert ids(client.post("/search", data={"vector": json.dumps(vector), "k": "3", **PLAIN}))[0] == stored[2]
    short = search_json(client, vector=vector[:-1])
    assert short.status_code == 422 and str(len(vector)) in short.json()["detail"]
    assert search_json(client, vector=[0.0] * len(vector)).status_code == 422


def test_a_rare_filter_still_returns_k_results(client: TestClient) -> None:
    stored = fill(client, 100)
    rare = [3, 40, 77, 91]  # 4 of 100: fewer than 1 in 20
    flt = {"n": {"$in": rare}}
    for body in ({"id": stored[0]}, {"vector": stored_vector(client, stored[50])}):
        found = ids(search_json(client, k=4, filter=flt, **body))
        assert sorted(found) == sorted(stored[i] for i in rare), body
    query = {"file": ("q.jpg", image_bytes(7), "image/jpeg")}
    by_file = ids(client.post("/search", files=query, data={"k": "4", "filter": json.dumps(flt)}))
    assert sorted(by_file) == sorted(stored[i] for i in rare)
    cats = ids(search_json(client, id=stored[0], k=10, path_prefix="dog-"))
    assert len(cats) == 10 and all(i in stored[1::2] for i in cats)
    none = search_json(client, id=stored[0], filter={"kind": "bird"})
    assert ids(none) == []


def test_threshold_and_offset(client: TestClient) -> None:
    stored = fill(client, 10)
    vector = stored_vector(client, stored[4])
    full = search_json(client, vector=vector, k=8, **PLAIN).json()["results"]
    page = search_json(client, vector=vector, k=3, offset=3, **PLAIN).json()["results"]
    assert [hit["id"] for hit in page] == [hit["id"] for hit in full[3:6]]
    cut = full[2]["score"]
    kept = search_json(client, vector=vector, k=8, threshold=cut, **PLAIN).json()["results"]
    assert [hit["id"] for hit in kept] == [hit["id"] for hit in full if hit["score"] >= cut]
    assert len(kept) < 8


def test_unknown_fields_and_query_parameters_are_named(client: TestClient) -> None:
    fill(client, 2)
    query = {"file": ("q.jpg", image_bytes(1), "image/jpeg")}
    for response, needle in (
        (client.post("/search?k=2", files=query), "k"),
        (client.post("/search", files=query, data={"kk": "2"}), "kk"),
        (client.post("/search", files=query, data={"filter": "{nope"}), "filter"),
        (search_json(client, id=1, colour="red"), "colour"),
        (search_json(client, id=1, vector=[1.0]), "exactly one"),
        (search_json(client, k=3), "exactly one"),
        (search_json(client, id=1, box="0,0,1,1"), "box"),
        (client.post("/search", content=b"id=1", headers={"content-type": "text/plain"}), "multipart"),
    ):
        assert response.status_code == 422, (needle, response.text)
        assert needle in response.json()["detail"], (needle, response.json())


def test_search_by_url_is_off_by_default(client: TestClient) -> None:
    response = search_json(client, url="https://example.com/a.jpg")
    assert response.status_code == 422 and "CBIR_FETCH_ALLOWED_HOSTS" in response.json()["detail"]


@pytest.fixture
def url_client(settings: Settings) -> Iterator[TestClient]:
    allowed = ["localhost", "10.1.2.3", "169.254.169.254", "127.0.0.1", "[::1]", "::1", ".example.org"]
    with TestClient(create_app(settings.model_copy(update={"fetch_allowed_hosts": allowed}))) as test_client:
        yield test_client


def test_search_by_url_refuses_internal_addresses(url_client: TestClient) -> None:
    for url, needle in (
        ("http://localhost/a.jpg", "127.0.0.1"),  # allowed by name, refused after resolution
        ("http://127.0.0.1:8000/a.jpg", "loopback"),
        ("http://10.1.2.3/a.jpg", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/a.jpg", "non-public"),
        ("http://intranet.corp/a.jpg", "not in CBIR_FETCH_ALLOWED_HOSTS"),
        ("ftp://localhost/a.jpg", "http"),
        ("http://user:pw@localhost/a.jpg", "credentials"),
    ):
        response = search_json(url_client, url=url)
        assert response.status_code == 422, url
        assert response.json()["error"] == "url_refused" and needle in response.json()["detail"], url


def test_search_by_url_fetches_within_the_limits(
    url_client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stored = fill(url_client, 5)
    # The test server is on loopback, which the service refuses: allow it for this test only.
    monkeypatch.setattr(fetch, "address_allowed", lambda address: True)
    picture = image_bytes(2)  # the content of stored[2]
    with serve_bytes({"/a.jpg": picture, "/moved": None}) as base:
        found = ids(search_json(url_client, url=f"{base}/a.jpg", k=3))
        assert found[0] == stored[2]
        moved = search_json(url_client, url=f"{base}/moved")
        assert moved.status_code == 422 and "redirect" in moved.json()["detail"]
        missing = search_json(url_client, url=f"{base}/nothing")
        assert missing.status_code == 422 and "404" in missing.json()["detail"]
    small = url_client.app.state.settings.model_copy(update={"max_upload_bytes": 100})  # type: ignore[attr-defined]
    with serve_bytes({"/a.jpg": picture}) as base, pytest.raises(Exception, match="upload limit"):
        fetch.fetch_image(f"{base}/a.jpg", small)

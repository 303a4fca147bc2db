"""Two real `cbir serve` processes over one collection — one SQLite data directory, or one PostgreSQL
database — for each vector store, replaying the sequence of issue 12 that used to go wrong: B served a
deleted image, gave fewer than k results, and took a new upload for the deleted one (its reused id).

The bound: a change committed on A is applied by B before B answers its next request (B reads the change
feed's max(seq) per search), so the checks after a write on A are made at once, not polled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.db.session import make_engine, make_session_factory
from app.db.tables import Image
from index import available_stores
from tests.helpers.images import image_bytes
from tests.helpers.replicas import cbir_serve, milvus_lite, tiny_env

pytestmark = pytest.mark.slow


@pytest.fixture(params=available_stores())
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str | None
) -> Iterator[tuple[str, str, str]]:
    """(A's URL, B's URL, the database URL) of two servers sharing a data directory and database."""
    data_dir = tmp_path / "data"
    db_url = database_url or f"sqlite:///{(data_dir / 'cbir.db').resolve()}"
    extra = {"CBIR_VECTOR_STORE": request.param}
    if database_url:
        extra["CBIR_DATABASE_URL"] = database_url
    with ExitStack() as stack:
        if request.param == "milvus":
            extra["CBIR_MILVUS_URI"] = stack.enter_context(milvus_lite(tmp_path / "milvus")).uri
        env = tiny_env(data_dir, **extra)
        a = stack.enter_context(cbir_serve(env))
        b = stack.enter_context(cbir_serve(env))
        yield a, b, db_url


def upload(url: str, seed: int) -> int:
    response = httpx.post(
        f"{url}/images", files={"file": (f"{seed}.jpg", image_bytes(seed), "image/jpeg")}, timeout=60
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def search(url: str, seed: int, k: int) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{url}/search",
        data={"k": str(k)},
        files={"file": ("q.jpg", image_bytes(seed), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_two_replicas_follow_each_other(replicas: tuple[str, str, str]) -> None:
    a, b, db_url = replicas
    for seed in range(3):
        upload(a, 100 + seed)
    q = upload(a, 1)
    top = search(b, 1, 1)[0]  # 1. an upload on A is found on B
    assert (top["id"], round(top["score"], 3)) == (q, 1.0)

    assert httpx.delete(f"{a}/images/{q}", timeout=60).status_code == 200  # 2. a delete on A
    hits = search(b, 1, 2)
    assert q not in [hit["id"] for hit in hits]
    assert len(hits) == 2  # k results: the collection holds 3
    assert all(q not in [h["id"] for h in search(b, 1, k)] for k in (1, 3, 10))

    engine = make_engine(db_url)
    try:
        sessions = make_session_factory(engine)
        some = search(b, 100, 1)[0]["id"]  # 3. a metadata change on A (PATCH, a merge patch) is seen on B
        patched = httpx.patch(f"{a}/images/{some}", json={"metadata": {"sku": "B-2"}}, timeout=60)
        assert patched.status_code == 200, patched.text
        assert search(b, 100, 1)[0]["metadata"] == {"sku": "B-2"}
        assert httpx.get(f"{b}/images/{some}", timeout=60).json()["metadata"] == {"sku": "B-2"}

        q2 = upload(a, 2)  # 4. a new image after a delete gets a new id, and B finds it under that id
        assert q2 > q
        top = search(b, 2, 1)[0]
        assert (top["id"], round(top["score"], 3)) == (q2, 1.0)
        assert q not in [hit["id"] for hit in search(b, 1, 4)]

        stats = httpx.get(f"{b}/stats", timeout=60).json()  # 5. B's count is the database's
        with sessions() as session:
            in_db = session.scalar(select(func.count()).select_from(Image))
        assert stats["count"] == stats["indexed"] == in_db == 4
    finally:
        engine.dispose()

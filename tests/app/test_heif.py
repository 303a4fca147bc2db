"""HEIC/HEIF photos (phones) are uploaded, searched and bulk-indexed like JPEGs, with the same limits."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.app.test_cli import env as env  # the fixture
from tests.app.test_cli import invoke
from tests.helpers.images import image_bytes

pytest.importorskip("pillow_heif")


def heic(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    picture = Image.open(io.BytesIO(image_bytes(seed, size)))
    out = io.BytesIO()
    picture.save(out, format="HEIF", quality=90)
    return out.getvalue()


def test_a_heic_upload_is_stored_served_and_found(client: TestClient) -> None:
    data = heic(3)
    added = client.post("/images", files={"file": ("IMG_0001.HEIC", data, "image/heic")})
    assert added.status_code == 201, added.text
    image = added.json()["image"]
    assert (image["format"], image["width"], image["height"]) == ("HEIF", 96, 64)
    stored = client.get(image["url"])
    assert stored.headers["content-type"] == "image/heic" and stored.content == data
    assert client.get(image["thumbnail_url"]).headers["content-type"] == "image/jpeg"
    found = client.post("/search", files={"file": ("q.heic", data, "image/heic")}).json()["results"]
    assert found[0]["id"] == image["id"] and found[0]["score"] > 0.999


def test_a_heic_above_the_pixel_limit_is_refused(client: TestClient) -> None:
    client.app.state.collection.settings.max_pixels = 1000  # type: ignore[attr-defined]
    response = client.post("/images", files={"file": ("big.heic", heic(4, (96, 64)), "image/heic")})
    assert response.status_code in (413, 422) and "pixel" in response.text.lower()


def test_bulk_indexing_reads_heic(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "phone"
    folder.mkdir()
    for seed in range(3):
        (folder / f"IMG_{seed}.heic").write_bytes(heic(seed))
    done = invoke(env, "index", str(folder))
    assert done.exit_code == 0 and "added 3" in done.output, done.output

"""GET /images/{id}/duplicates?threshold=: the threshold asked for is the one applied and answered.

tests/app/test_ranking.py checks that a low threshold lets in only verified copies; a threshold above the
copy's cosine must leave the copy out, which the collection's default (below it) would not.
"""

from __future__ import annotations

import io
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.helpers.images import encode, image_bytes
from tests.helpers.settings import tiny_settings


def test_the_threshold_asked_for_is_applied_and_answered(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, backbone="cell_stats")
    picture = image_bytes(5)
    resaved = encode(Image.open(io.BytesIO(picture)).convert("RGB").resize((120, 80)), "JPEG", quality=70)
    with TestClient(create_app(settings)) as client:
        [original, copy] = [
            client.post("/images", files={"file": (name, data)}).json()["id"]
            for name, data in (("a.jpg", picture), ("b.jpg", resaved))
        ]
        default = client.get(f"/images/{original}/duplicates").json()
        assert default["threshold"] == settings.duplicate_threshold
        assert [hit["id"] for hit in default["results"]] == [copy]
        assert default["results"][0]["score"] < 1.0  # re-saved: not an exact copy
        strict = client.get(f"/images/{original}/duplicates", params={"threshold": 1.0}).json()
        assert (strict["threshold"], strict["results"]) == (1.0, [])

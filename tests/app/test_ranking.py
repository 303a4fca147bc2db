"""Whole rankings through the public API on the discriminating `cell_stats` test backbone.

Its distinct pictures score from about -0.5 to 0.75 against each other (tests/helpers/backbones.py), so these
tests check the order and the score of every hit against cosines computed here from the encoder itself, and
the invariants of re-ranked results that clipping must not be what makes true: scores are cosines (within
[-1, 1]), they never increase down the list, the asked-for picture comes first and nothing else scores like
a copy of it, and re-ranking keeps the plain neighbours near the top.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.search.duplicates import duplicate_groups
from models import Encoder, build_encoder
from tests.helpers.images import encode, image_bytes
from tests.helpers.settings import tiny_settings

N = 24
EPS = 1e-5


def resaved(seed: int) -> bytes:
    """The same picture re-encoded (not an exact copy: other bytes, other pixels)."""
    return encode(
        Image.open(io.BytesIO(image_bytes(seed))).convert("RGB").resize((120, 80)), "JPEG", quality=70
    )


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return build_encoder("cell_stats", "gap", max_side=64, device="cpu")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[int, int]]]:
    """A collection of N distinct pictures; returns the client and seed -> image id."""
    # Geometric verification off: these tests check the cosine ranking and re-ranking themselves (a verified
    # hit's score blends in P(same); tests/app/search/test_verification.py covers that).
    settings = tiny_settings(tmp_path_factory.mktemp("ranking"), backbone="cell_stats").model_copy(
        update={"verify_candidates": 0}
    )
    with TestClient(create_app(settings)) as client:
        ids = {}
        for seed in range(N):
            response = client.post("/images", files={"file": (f"{seed}.jpg", image_bytes(seed))})
            assert response.status_code == 201, response.text
            ids[seed] = response.json()["id"]
        yield client, ids


def vector(encoder: Encoder, data: bytes) -> np.ndarray:
    return encoder.embed([Image.open(io.BytesIO(data)).convert("RGB")])[0]


def search(client: TestClient, data: bytes, **fields: Any) -> list[tuple[int, float]]:
    response = client.post("/search", files={"file": ("q.jpg", data)}, data={"k": str(N), **fields})
    assert response.status_code == 200, response.text
    return [(hit["id"], hit["score"]) for hit in response.json()["results"]]


def test_the_test_backbone_discriminates(encoder: Encoder) -> None:
    vectors = np.stack([vector(encoder, image_bytes(seed)) for seed in range(N)])
    similarity = vectors @ vectors.T
    others = similarity[~np.eye(N, dtype=bool)]
    assert others.max() < 0.9 and others.min() < 0.0  # real spread, unlike tiny_random's 0.995-0.999
    assert float(vector(encoder, resaved(3)) @ vectors[3]) > 0.98  # a re-saved copy still scores as one


@pytest.mark.parametrize("seed", [0, 7, 19])
def test_a_plain_search_answers_every_hit_in_cosine_order_with_its_cosine(
    service: tuple[TestClient, dict[int, int]], encoder: Encoder, seed: int
) -> None:
    client, ids = service
    query = resaved(seed)
    cosines = {ids[s]: float(vector(encoder, image_bytes(s)) @ vector(encoder, query)) for s in range(N)}
    expected = sorted(cosines, key=cosines.__getitem__, reverse=True)
    hits = search(client, query, query_expansion="0", database_augmentation="0")
    assert [image_id for image_id, _ in hits] == expected
    assert hits[0][0] == ids[seed]
    for image_id, score in hits:
        assert score == pytest.approx(cosines[image_id], abs=1e-4)


@pytest.mark.parametrize(
    ("qe", "dba"), [("3", "0"), ("0", "3"), ("3", "3"), ("10", "0")], ids=["qe", "dba", "qe+dba", "qe10"]
)
@pytest.mark.parametrize("exact", [True, False], ids=["exact copy", "re-saved"])
@pytest.mark.parametrize("seed", [2, 11])
def test_re_ranked_scores_stay_cosines_in_order_with_the_right_neighbours_on_top(
    service: tuple[TestClient, dict[int, int]], seed: int, exact: bool, qe: str, dba: str
) -> None:
    client, ids = service
    query = image_bytes(seed) if exact else resaved(seed)
    plain = search(client, query, query_expansion="0", database_augmentation="0")
    hits = search(client, query, query_expansion=qe, database_augmentation=dba)
    scores = [score for _, score in hits]
    assert len(hits) == N and len({image_id for image_id, _ in hits}) == N
    assert all(-1 - EPS <= score <= 1 + EPS for score in scores), f"not cosines: {scores}"
    assert all(a >= b - EPS for a, b in pairwise(scores)), f"scores increase: {scores}"
    assert hits[0][0] == ids[seed]  # the picture asked for comes first
    # Nothing but the query's own picture is a copy of it: no other hit may score like one.
    assert max(scores[1:]) < 0.95, f"a distinct picture scored like a copy: {scores}"
    assert len({round(score, 4) for score in scores}) >= N - 2, f"scores collapsed to a few values: {scores}"
    # Re-ranking refines the order; it does not bring the least similar pictures to the top.
    plain_top = {image_id for image_id, _ in plain[:6]}
    assert len(plain_top & {image_id for image_id, _ in hits[:6]}) >= 4
    plain_bottom = {image_id for image_id, _ in plain[-6:]}
    assert not plain_bottom & {image_id for image_id, _ in hits[:6]}


def test_duplicates_are_the_copies_only_and_the_threshold_asked_for_applies(
    service: tuple[TestClient, dict[int, int]], encoder: Encoder
) -> None:
    client, ids = service
    copy = client.post("/images", files={"file": ("copy.jpg", resaved(5))})
    assert copy.status_code == 201
    copy_id = copy.json()["id"]
    try:
        found = client.get(f"/images/{ids[5]}/duplicates").json()["results"]
        assert [hit["id"] for hit in found] == [copy_id]
        assert 0.98 < found[0]["score"] <= 1 + EPS
        # A low threshold lets every picture at least that similar be a candidate; only those that geometric
        # verification confirms as the same picture come back, most similar first.
        anchor = vector(encoder, image_bytes(5))
        cosines = {ids[s]: float(vector(encoder, image_bytes(s)) @ anchor) for s in range(N) if s != 5}
        candidates = {image_id for image_id, cosine in cosines.items() if cosine >= 0.3} | {copy_id}
        assert len(candidates) > 2
        loose = client.get(f"/images/{ids[5]}/duplicates", params={"threshold": 0.3}).json()["results"]
        assert copy_id in {hit["id"] for hit in loose} and {hit["id"] for hit in loose} <= candidates
        assert all(hit["match"] == "same" for hit in loose)
        scores = [hit["score"] for hit in loose]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3 - EPS
        groups = duplicate_groups(client.app.state.collection, 0.95)  # type: ignore[attr-defined]
        assert [[image.id for image in group] for group in groups] == [[ids[5], copy_id]]
    finally:
        assert client.delete(f"/images/{copy_id}").status_code == 200
    stats = client.get("/stats").json()
    assert stats["count"] == stats["indexed"] == N  # the deleted copy left the index too
    assert len(search(client, image_bytes(5), query_expansion="0")) == N

"""The service with a trained autoencoder as its encoder: indexing and search over HTTP, refusal of a
collection built by another encoder, and POST /denoise."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.errors import CollectionMismatchError
from app.main import create_app
from models import EncoderConfigError
from tests.helpers.dae import train_tiny
from tests.helpers.images import image_bytes


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny models trained alike but for the seed: same shape, other weights, other fingerprints."""
    root = tmp_path_factory.mktemp("dae")
    first, second = root / "first.pt", root / "second.pt"
    train_tiny(first, seed=0)
    train_tiny(second, seed=1)
    return first, second


def with_encoder(settings: Settings, spec: str | None) -> Settings:
    return settings.model_copy(update={"encoder": spec})


def upload(client: TestClient, seed: int) -> int:
    response = client.post("/images", files={"file": (f"{seed}.jpg", image_bytes(seed), "image/jpeg")})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_a_collection_indexed_with_an_autoencoder_is_searchable(
    settings: Settings, checkpoints: tuple[Path, Path]
) -> None:
    with TestClient(create_app(with_encoder(settings, f"dae:{checkpoints[0]}"))) as client:
        ids = [upload(client, seed) for seed in range(6)]
        stats = client.get("/stats").json()
        assert stats["encoder"].startswith("dae@") and stats["dimension"] == 8 and stats["count"] == 6
        response = client.post("/search", files={"file": ("q.jpg", image_bytes(3))}, data={"k": "6"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["encoder"] == stats["encoder"]
        hits = {hit["id"]: hit["score"] for hit in body["results"]}
        assert set(hits) == set(ids)
        # The query's own picture scores 1 and nothing scores more.
        assert hits[ids[3]] == pytest.approx(1.0, abs=1e-5)
        assert max(hits.values()) == pytest.approx(hits[ids[3]], abs=1e-6)


def test_a_collection_built_by_another_encoder_is_refused_with_the_fix(
    settings: Settings, checkpoints: tuple[Path, Path]
) -> None:
    first, second = checkpoints
    with TestClient(create_app(with_encoder(settings, f"dae:{first}"))) as client:
        upload(client, 1)
        built_by = client.get("/stats").json()["encoder"]
    for other in (f"dae:{second}", None):  # another trained model, or the backbone
        with (
            pytest.raises(CollectionMismatchError) as refused,
            TestClient(create_app(with_encoder(settings, other))),
        ):
            pass
        message = refused.value.detail
        # Names the collection's model (fingerprint and file) and both ways out.
        assert built_by in message and str(first) in message
        assert "cbir reindex" in message and "configure" in message
    # The model it was built with still opens it.
    with TestClient(create_app(with_encoder(settings, f"dae:{first}"))) as client:
        assert client.get("/stats").json()["count"] == 1


def test_denoise_returns_the_reconstruction_as_png(
    settings: Settings, checkpoints: tuple[Path, Path]
) -> None:
    with TestClient(create_app(with_encoder(settings, f"dae:{checkpoints[0]}"))) as client:
        clean = client.post("/denoise", files={"file": ("a.png", image_bytes(5, fmt="PNG"))})
        assert clean.status_code == 200, clean.text
        assert clean.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(clean.content))
        assert picture.format == "PNG" and picture.size == (16, 16) and picture.mode == "L"
        noisy = client.post(
            "/denoise",
            files={"file": ("a.png", image_bytes(5, fmt="PNG"))},
            data={"noise": "masking", "strength": "0.6"},
        )
        assert noisy.status_code == 200, noisy.text
        assert noisy.content != clean.content
        again = client.post(
            "/denoise",
            files={"file": ("a.png", image_bytes(5, fmt="PNG"))},
            data={"noise": "masking", "strength": "0.6"},
        )
        assert again.content == noisy.content  # the noise is seeded

        bad_kind = client.post(
            "/denoise", files={"file": ("a.png", image_bytes(5))}, data={"noise": "speckle"}
        )
        assert bad_kind.status_code == 422 and bad_kind.json()["error"] == "invalid_noise"
        assert "salt_pepper" in bad_kind.json()["detail"]
        too_strong = client.post(
            "/denoise", files={"file": ("a.png", image_bytes(5))}, data={"strength": "2"}
        )
        assert too_strong.status_code == 422
        not_image = client.post("/denoise", files={"file": ("a.txt", b"just text")})
        assert not_image.status_code == 422 and not_image.json()["error"] == "invalid_image"


def test_denoise_without_an_autoencoder_says_how_to_configure_one(client: TestClient) -> None:
    response = client.post("/denoise", files={"file": ("a.jpg", image_bytes(1))})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "not_an_autoencoder"
    assert "cbir train autoencoder" in body["detail"] and "CBIR_ENCODER=dae:" in body["detail"]


def test_a_bad_encoder_setting_names_what_is_wrong(settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    missing_app = create_app(with_encoder(settings, f"dae:{missing}"))
    with (
        pytest.raises(EncoderConfigError, match=r"missing\.pt.*cbir train autoencoder"),
        TestClient(missing_app),
    ):
        pass
    unknown_app = create_app(with_encoder(settings, "vae:x.pt"))
    with (
        pytest.raises(EncoderConfigError, match=r"unknown encoder 'vae:x\.pt'.*dae:"),
        TestClient(unknown_app),
    ):
        pass


def test_a_relative_checkpoint_path_is_recorded_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        Settings(encoder="dae:models/scans.pt").encoder == f"dae:{tmp_path.resolve() / 'models' / 'scans.pt'}"
    )
    assert Settings(encoder="backbone").encoder == "backbone"
    assert Settings().encoder is None

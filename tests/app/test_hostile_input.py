"""A corpus of odd and broken files (tests/helpers/hostile.py) sent through every way in: each gets its
expected status or message, and afterwards the service still answers /health and searches correctly, with
nothing written for the refused."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from app.cli import app as cli
from app.config import Settings
from app.main import create_app
from tests.helpers.dae import train_tiny
from tests.helpers.hostile import ACCEPTED, HOSTILE_METADATA, HOSTILE_NAMES, REFUSED
from tests.helpers.images import image_bytes
from tests.helpers.settings import cli_env, tiny_settings

runner = CliRunner()


def test_every_file_of_the_corpus_gets_its_status(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        ids: dict[str, int] = {}
        for seed, (name, (make, size)) in enumerate(ACCEPTED.items()):
            # a misleading name and content type: the type is decided by decoding only
            response = client.post("/images", files={"file": (f"{name}.txt", make(seed), "text/plain")})
            assert response.status_code == 201, (name, response.text)
            image = response.json()["image"]
            assert (image["width"], image["height"]) == size, name
            ids[name] = image["id"]
        for name, (data, status) in REFUSED.items():
            for endpoint in ("/images", "/search"):
                response = client.post(endpoint, files={"file": (f"{name}.jpg", data, "image/jpeg")})
                assert response.status_code == status, (name, endpoint, response.text)
                body = response.json()
                assert set(body) == {"error", "detail"}, name
                assert "Traceback" not in body["detail"]
        too_big = client.post("/images", files={"file": ("big.jpg", b"\xff\xd8" + b"0" * (21 * 1024 * 1024))})
        assert too_big.status_code == 413

        assert client.get("/health").status_code == 200
        stats = client.get("/stats").json()
        assert (stats["count"], stats["indexed"]) == (len(ACCEPTED), len(ACCEPTED))
        stored = [p for p in settings.images_dir.rglob("*") if p.is_file()]
        assert len(stored) == len(ACCEPTED)
        for seed, (name, (make, _)) in enumerate(ACCEPTED.items()):
            hits = client.post("/search", files={"file": ("q", make(seed))}, data={"k": "1"}).json()[
                "results"
            ]
            assert hits[0]["id"] == ids[name], name


@pytest.fixture(scope="module")
def dae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dae") / "tiny.pt"
    train_tiny(path)
    return path


def test_denoise_refuses_the_corpus_it_cannot_read_and_rebuilds_the_rest(
    tmp_path: Path, dae_checkpoint: Path
) -> None:
    settings = tiny_settings(tmp_path).model_copy(update={"encoder": f"dae:{dae_checkpoint}"})
    with TestClient(create_app(settings)) as client:
        for name, (data, status) in REFUSED.items():
            response = client.post("/denoise", files={"file": (f"{name}.png", data, "image/png")})
            assert response.status_code == status, (name, response.text)
            assert set(response.json()) == {"error", "detail"}, name
        for seed, (name, (make, _)) in enumerate(ACCEPTED.items()):
            response = client.post("/denoise", files={"file": (name, make(seed))}, data={"noise": "gaussian"})
            assert response.status_code == 200, (name, response.text)
            assert response.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(response.content)).size == (16, 16)
        assert client.get("/health").status_code == 200


def corpus_folder(root: Path) -> Path:
    """The corpus as files, under the names a hostile folder may hold."""
    root.mkdir(parents=True)
    for seed, (name, (make, _)) in enumerate(ACCEPTED.items()):
        (root / f"ok-{name}.jpg").write_bytes(make(seed))
    for name, (data, _) in REFUSED.items():
        (root / f"bad-{name}.jpg").write_bytes(data)
    (root / "ünïcødé ✓ name.png").write_bytes(ACCEPTED["png"][0](500))
    (root / "-starts-with-dash.jpg").write_bytes(ACCEPTED["jpeg"][0](501))
    return root


def test_cbir_index_adds_the_good_skips_the_bad_naming_each_and_cbir_search_refuses_it(
    settings: Settings, tmp_path: Path
) -> None:
    folder = corpus_folder(tmp_path / "corpus")
    env = cli_env(settings)
    indexed = runner.invoke(cli, ["index", str(folder)], env=env)
    assert indexed.exit_code == 0, indexed.output
    good = len(ACCEPTED) + 2
    assert f"added {good}, duplicates 0, skipped {len(REFUSED)}" in indexed.output
    listed = [line for line in indexed.output.splitlines() if "skipped " in line and "/bad-" in line]
    assert len(listed) == min(20, len(REFUSED))  # the first 20 by name, with the reason, then a count
    assert all(line.split(": ", 1)[1].strip() for line in listed)
    if len(REFUSED) > 20:
        assert f"and {len(REFUSED) - 20} more" in indexed.output
    assert "Traceback" not in indexed.output
    assert sum(1 for p in settings.images_dir.rglob("*") if p.is_file()) == good
    for name in ("bomb-20000x20000", "gif-bomb-11000x10000", "tiff-bomb-20000x20000", "zero-bytes", "svg"):
        refused = runner.invoke(cli, ["search", str(folder / f"bad-{name}.jpg")], env=env)
        assert refused.exit_code == 1, (name, refused.output)
        assert "Traceback" not in refused.output and refused.output.strip(), name
    found = runner.invoke(cli, ["search", str(folder / "ünïcødé ✓ name.png"), "--json"], env=env)
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["original_name"] == "ünïcødé ✓ name.png"


def test_hostile_file_names_are_kept_as_names_only(client: TestClient, settings: Settings) -> None:
    for seed, name in enumerate(HOSTILE_NAMES):
        response = client.post("/images", files={"file": (name, image_bytes(seed), "image/jpeg")})
        assert response.status_code == 201, (name[:40], response.text)
        # Path components are stripped (an upload is a name, not a place: issue 16), whatever the separator.
        base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
        want = base if base not in ("", ".", "..") else "upload"
        assert response.json()["image"]["original_name"] == want[:1024], name[:40]
        assert client.get(response.json()["image"]["url"]).content == image_bytes(seed)
    # No file name at all: multipart makes it a text field, which is no file; a name longer than the parser's
    # header limit: the request is unreadable. Both are told so, in JSON, and nothing is stored.
    nameless = client.post("/images", files={"file": ("", image_bytes(900), "image/jpeg")})
    assert nameless.status_code == 422 and "file part named 'file'" in nameless.json()["detail"]
    endless = client.post("/images", files={"file": ("x" * 100_000, image_bytes(901), "image/jpeg")})
    assert 400 <= endless.status_code < 500 and set(endless.json()) == {"error", "detail"}
    files = [p for p in settings.data_dir.parent.rglob("*") if p.is_file() and "images" in p.parts]
    assert len(files) == len(HOSTILE_NAMES)
    assert all(settings.images_dir in p.parents for p in files), "a file was written outside images/"


@pytest.mark.parametrize("case", list(HOSTILE_METADATA))
def test_hostile_metadata_is_stored_as_sent_or_refused_by_name(client: TestClient, case: str) -> None:
    raw, status = HOSTILE_METADATA[case]
    response = client.post("/images", files={"file": ("m.jpg", image_bytes(700))}, data={"metadata": raw})
    assert response.status_code == status, (case, response.text[:300])
    if status == 201:
        assert response.json()["image"]["metadata"] == json.loads(raw)
    else:
        assert response.json()["error"] == "invalid_metadata" and response.json()["detail"], case
        assert client.get("/stats").json()["count"] == 0

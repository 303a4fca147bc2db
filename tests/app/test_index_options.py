"""Search-time index parameters over HTTP and the CLI, and `cbir index-build` from the command line."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app
from app.collection.facade import Collection
from app.config import Settings
from app.encoders import encoder_from_settings
from index import VectorIndex
from tests.helpers.images import image_bytes

runner = CliRunner()


def upload(client: TestClient, seed: int) -> int:
    response = client.post("/images", files={"file": (f"{seed}.jpg", image_bytes(seed))})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nprobe", "0"),
        ("nprobe", "-3"),
        ("nprobe", "many"),
        ("nprobe", "70000"),
        ("ef_search", "0"),
        ("ef_search", "5000"),
    ],
)
def test_bad_search_parameters_are_422_json(client: TestClient, field: str, value: str) -> None:
    upload(client, 1)
    response = client.post("/search", files={"file": ("q.jpg", image_bytes(1))}, data={field: value})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] and field in str(body["detail"])


def test_search_parameters_are_accepted_whatever_the_index_type(client: TestClient) -> None:
    ids = [upload(client, seed) for seed in range(3)]
    for fields in ({"nprobe": "4"}, {"ef_search": "32"}, {"nprobe": "1", "ef_search": "1"}):
        response = client.post(
            "/search", files={"file": ("q.jpg", image_bytes(2))}, data={"k": "3", **fields}
        )
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["id"] == ids[2]
    assert client.get("/stats").json()["index_type"].startswith("flat")


def test_index_build_and_search_options_on_the_command_line(settings: Settings) -> None:
    env = {
        "CBIR_DATA_DIR": str(settings.data_dir),
        "CBIR_DATABASE_URL": settings.db_url,
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": "64",
        "CBIR_DEVICE": "cpu",
    }
    empty = runner.invoke(app, ["index-build"], env=env)
    assert empty.exit_code == 1 and "holds no vectors" in empty.output
    folder = settings.data_dir.parent / "photos"
    folder.mkdir(parents=True)
    for seed in range(6):
        (folder / f"{seed}.jpg").write_bytes(image_bytes(seed))
    assert runner.invoke(app, ["index", str(folder)], env=env).exit_code == 0

    small = runner.invoke(app, ["index-build", "--type", "ivf_pq"], env=env)
    assert small.exit_code == 0 and "built flat" in small.output, small.output
    assert "ivf_pq needs at least 256 vectors to train on" in small.output
    built = runner.invoke(app, ["index-build", "--type", "hnsw"], env=env)
    assert built.exit_code == 0, built.output
    assert (
        "built hnsw (hnsw_m=32" in built.output
        and "with 6 vectors" in built.output
        and "(was flat)" in built.output
    )
    assert VectorIndex.read_header(settings.index_path)["index_type"] == "hnsw"
    found = runner.invoke(
        app,
        ["search", str(folder / "3.jpg"), "-k", "2", "--json", "--ef-search", "16"],
        env={**env, "CBIR_INDEX_TYPE": "hnsw"},
    )
    assert found.exit_code == 0 and '"3.jpg"' in found.output, found.output
    stats = runner.invoke(app, ["stats"], env={**env, "CBIR_INDEX_TYPE": "hnsw"})
    assert stats.exit_code == 0 and "removed_entries" in stats.output, stats.output
    assert "still holds" not in stats.output, "nothing was deleted"
    hnsw = settings.model_copy(update={"backbone": "tiny_random", "max_side": 64, "index_type": "hnsw"})
    collection = Collection.open(hnsw, encoder_from_settings(hnsw))
    collection.delete(int(collection.index.ids()[0]))
    collection.save_index()
    collection.close()
    stats = runner.invoke(app, ["stats"], env={**env, "CBIR_INDEX_TYPE": "hnsw"})
    assert "still holds the vectors of 1 deleted image (17% of its entries)" in stats.output, stats.output

    bad_type = runner.invoke(app, ["index-build", "--type", "annoy"], env=env)
    assert bad_type.exit_code == 2 and "index_type" in bad_type.output
    bad_probe = runner.invoke(app, ["search", str(folder / "3.jpg"), "--nprobe", "0"], env=env)
    assert bad_probe.exit_code == 2

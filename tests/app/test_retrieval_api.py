"""Over HTTP and the CLI: region (box) queries, per-request re-ranking, near-duplicates, `cbir fit`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from app.cli import app as cli
from app.config import Settings
from tests.helpers.databases import fresh_database
from tests.helpers.images import image_bytes
from tests.helpers.settings import cli_env, tiny_settings

runner = CliRunner()


def upload(client: TestClient, data: bytes, name: str) -> int:
    response = client.post("/images", files={"file": (name, data)})
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


def search(client: TestClient, data: bytes, **fields: str) -> dict[str, Any]:
    response = client.post("/search", files={"file": ("q.jpg", data)}, data=fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


def recompressed(data: bytes, quality: int = 60) -> bytes:
    """The same picture saved again as a lower-quality JPEG: a near-duplicate, not the same bytes."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_a_box_searches_for_that_region(client: TestClient) -> None:
    ids = [upload(client, image_bytes(seed, size=(96, 64)), f"{seed}.jpg") for seed in range(8)]
    # A query made of two pictures side by side: each half's box finds its own picture first.
    left, right = (Image.open(io.BytesIO(image_bytes(seed, size=(96, 64)))) for seed in (2, 5))
    both = Image.new("RGB", (192, 64))
    both.paste(left, (0, 0))
    both.paste(right, (96, 0))
    buffer = io.BytesIO()
    both.save(buffer, format="PNG")
    query = buffer.getvalue()
    plain = {"query_expansion": "0", "database_augmentation": "0"}
    assert search(client, query, box="0,0,96,64", **plain)["results"][0]["id"] == ids[2]
    assert search(client, query, box="96,0,192,64", **plain)["results"][0]["id"] == ids[5]


def test_bad_boxes_are_422_with_what_is_wrong(client: TestClient) -> None:
    upload(client, image_bytes(1), "1.jpg")
    for box, message in (
        ("1,2,3", "four numbers"),
        ("0,0,500,10", "inside the 96x64 image"),
        ("5,0,5,9", "x0 < x1"),
    ):
        response = client.post("/search", files={"file": ("q.jpg", image_bytes(1))}, data={"box": box})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request"
        assert message in response.json()["detail"]


def test_re_ranking_is_switched_per_request(client: TestClient) -> None:
    ids = [upload(client, image_bytes(seed), f"{seed}.jpg") for seed in range(30)]
    query = image_bytes(100)
    plain = search(client, query, k="10", query_expansion="0", database_augmentation="0")["results"]
    reranked = search(client, query, k="10")["results"]  # the service's default: re-ranking on
    assert {hit["id"] for hit in plain} <= set(ids)
    assert [hit["id"] for hit in plain] != [hit["id"] for hit in reranked]
    scores = [hit["score"] for hit in plain]
    assert scores == sorted(scores, reverse=True)
    bad = client.post("/search", files={"file": ("q.jpg", query)}, data={"query_expansion": "-1"})
    assert bad.status_code == 422


def test_duplicates_of_an_image(client: TestClient, settings: Settings) -> None:
    original = image_bytes(7)
    first = upload(client, original, "7.jpg")
    copy = upload(client, recompressed(original), "7-copy.jpg")
    others = [upload(client, image_bytes(seed), f"{seed}.jpg") for seed in range(4)]
    response = client.get(f"/images/{first}/duplicates", params={"threshold": 0.9999})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == 0.9999
    assert [hit["id"] for hit in body["results"]] == [copy]
    # A low cosine bound lets every picture be a candidate; what comes back passed the "same" decision
    # (the test encoder's cosines are not the default encoder's: only the decision's form is checked here).
    loose = client.get(f"/images/{first}/duplicates", params={"threshold": 0.01}).json()
    assert loose["results"][0]["id"] == copy
    assert {hit["id"] for hit in loose["results"]} <= {copy, *others}
    assert all(hit["match"] == "same" and hit["p_same"] >= 0.5 for hit in loose["results"])
    default = client.get(f"/images/{first}/duplicates").json()
    assert default["threshold"] == settings.duplicate_threshold
    assert client.get("/images/999/duplicates").status_code == 404
    assert client.get(f"/images/{first}/duplicates", params={"threshold": 1.5}).status_code == 422


def test_cli_fit_then_evaluate_index_search_with_a_box_and_group_duplicates(
    settings: Settings, tmp_path: Path
) -> None:
    classes = tmp_path / "classes"
    for label in range(3):
        (classes / f"c{label}").mkdir(parents=True)
        for seed in range(label * 10, label * 10 + 6):
            (classes / f"c{label}" / f"{seed}.jpg").write_bytes(image_bytes(seed))
    (classes / "c0" / "0-copy.jpg").write_bytes(recompressed(image_bytes(0)))
    env = cli_env(settings)
    fitted = tmp_path / "netvlad.safetensors"
    fit = runner.invoke(
        cli,
        ["fit", str(classes), "--head", "netvlad", "--clusters", "2", "--dim", "8", "--out", str(fitted)],
        env=env,
    )
    assert fit.exit_code == 0, fit.output
    assert "fitted on 19 images" in fit.output
    assert f"--fitted {fitted}" in fit.output
    netvlad = {**env, "CBIR_HEAD": "netvlad", "CBIR_FITTED": str(fitted)}
    evaluated = runner.invoke(cli, ["evaluate", str(classes)], env=netvlad)
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.output.strip().splitlines()[-1])
    assert "/fit#" in figures["encoder"]
    assert figures["rerank"]["query_expansion"] == 10
    assert figures["images"] == 19

    assert runner.invoke(cli, ["index", str(classes)], env=netvlad).exit_code == 0
    query = classes / "c1" / "12.jpg"
    found = runner.invoke(
        cli, ["search", str(query), "--box", "0,0,96,64", "--qe", "0", "--json"], env=netvlad
    )
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["original_name"] == "c1/12.jpg"  # as indexed: under its class folder
    # GAP, the encoder the threshold is measured for: a second collection, on a database of its own kind.
    with fresh_database("postgresql" if settings.database_url else "sqlite") as other:
        plain = cli_env(tiny_settings(tmp_path / "gap", other))
        assert runner.invoke(cli, ["index", str(classes)], env=plain).exit_code == 0
        grouped = runner.invoke(cli, ["duplicates", "--threshold", "0.9999", "--json"], env=plain)
    assert grouped.exit_code == 0, grouped.output
    groups = json.loads(grouped.output)["groups"]
    assert [sorted(image["original_name"] for image in group) for group in groups] == [
        ["c0/0-copy.jpg", "c0/0.jpg"]
    ]
    # Fitting without a folder learns from the collection's stored images.
    again = runner.invoke(cli, ["fit", "--head", "netvlad", "--clusters", "2"], env=netvlad)
    assert again.exit_code == 0, again.output
    assert "fitted on 19 images of collection" in again.output
    assert (settings.data_dir / "fitted-netvlad.safetensors").exists()


def test_cli_errors_for_fit_and_box(settings: Settings, tmp_path: Path) -> None:
    env = cli_env(settings)
    nothing = runner.invoke(cli, ["fit", str(tmp_path)], env=env)
    assert nothing.exit_code == 1
    assert "nothing to fit" in nothing.output
    picture = tmp_path / "q.jpg"
    picture.write_bytes(image_bytes(3))
    unfitted = runner.invoke(cli, ["index", str(tmp_path)], env={**env, "CBIR_HEAD": "netvlad"})
    assert unfitted.exit_code == 1
    assert "cbir fit" in unfitted.output
    bad = runner.invoke(cli, ["search", str(picture), "--box", "a,b"], env=env)
    assert bad.exit_code == 1
    assert "four numbers" in bad.output


def test_cli_finetune_makes_an_encoder_that_reindex_switches_a_collection_to(
    settings: Settings, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(10):
        (photos / f"{seed}.jpg").write_bytes(image_bytes(seed))
    env = {**cli_env(settings), "CBIR_HEAD": "gem"}
    assert runner.invoke(cli, ["index", str(photos)], env=env).exit_code == 0
    tuned = tmp_path / "gem.safetensors"
    small = ["--epochs", "2", "--views", "2", "--crop", "48", "--train-batch", "4", "--validation", "0"]
    # No folder: it learns from the collection's stored images.
    run = runner.invoke(cli, ["finetune", "--out", str(tuned), *small], env=env)
    assert run.exit_code == 0, run.output
    assert "fine-tuned (self-supervised) on 10 pictures of collection" in run.output
    assert (
        "epoch 2/2" in run.output and "ran all 2 epochs" in run.output and f"--fitted {tuned}" in run.output
    )
    switched = {**env, "CBIR_FITTED": str(tuned)}
    refused = runner.invoke(cli, ["search", str(photos / "3.jpg")], env=switched)
    assert refused.exit_code == 1 and "cbir reindex" in refused.output
    assert runner.invoke(cli, ["reindex"], env=switched).exit_code == 0
    found = runner.invoke(cli, ["search", str(photos / "3.jpg"), "--json"], env=switched)
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["original_name"] == "3.jpg"
    again = runner.invoke(cli, ["finetune", "--out", str(tuned), *small], env=env)
    assert again.exit_code == 2 and "already exists: pass --resume" in again.output
    gap = runner.invoke(cli, ["finetune", str(photos), *small], env=cli_env(settings))
    assert gap.exit_code == 1 and "nothing to learn" in gap.output
    labelless = runner.invoke(cli, ["finetune", "--classes", *small], env=env)
    assert labelless.exit_code == 2 and "--classes needs a DIRECTORY" in labelless.output

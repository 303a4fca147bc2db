"""`cbir train autoencoder`, `--encoder dae:PATH` through index / search / reindex, and `cbir denoise`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from app.cli import app
from tests.helpers.images import image_bytes

runner = CliRunner()

TINY_FLAGS = ["--size", "16", "--width", "4", "--code-size", "8", "--train-batch", "8", "--device", "cpu"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CBIR_DATA_DIR": str(tmp_path / "data"),
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": "64",
        "CBIR_BATCH_SIZE": "4",
        "CBIR_DEVICE": "cpu",
    }


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """24 pictures in class-like folders (training ignores them), one duplicate, one non-image."""
    root = tmp_path / "photos"
    for seed in range(24):
        folder = root / f"class{seed % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{seed}.png").write_bytes(image_bytes(seed, size=(40, 30), fmt="PNG"))
    (root / "class0" / "copy.png").write_bytes(image_bytes(0, size=(40, 30), fmt="PNG"))
    (root / "readme.txt").write_text("not a picture")
    return root


def invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


def test_train_index_search_denoise_and_switch_back(
    env: dict[str, str], photos: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    trained = invoke(env, "train", "autoencoder", str(photos), "-o", str(model), "--epochs", "2", *TINY_FLAGS)
    assert trained.exit_code == 0, trained.output
    assert "training on 24 pictures (1 duplicates, 1 unreadable skipped)" in trained.output
    assert "epoch 2/2" in trained.output and "ran all 2 epochs" in trained.output
    assert f"--encoder dae:{model}" in trained.output
    fingerprint = trained.output.split("fingerprint ")[1].split()[0]
    assert fingerprint.startswith("dae@")

    again = invoke(env, "train", "autoencoder", str(photos), "-o", str(model), *TINY_FLAGS)
    assert again.exit_code == 2 and "already exists: pass --resume" in again.output
    resumed = invoke(
        env, "train", "autoencoder", str(photos), "-o", str(model), "--epochs", "2", "--resume", *TINY_FLAGS
    )
    assert resumed.exit_code == 0, resumed.output
    assert "already finished after 2 epochs" in resumed.output and fingerprint in resumed.output

    dae_env = {**env, "CBIR_ENCODER": f"dae:{model}"}
    indexed = invoke(dae_env, "index", str(photos))
    assert indexed.exit_code == 0, indexed.output
    assert "added 24, duplicates 1, skipped 1" in indexed.output
    query = photos / "class1" / "4.png"
    found = invoke(env, "search", str(query), "--json", "-k", "24", "--encoder", f"dae:{model}")
    assert found.exit_code == 0, found.output
    scores = {row["original_name"]: row["score"] for row in json.loads(found.output)}
    assert (
        scores["class1/4.png"] == pytest.approx(1.0, abs=1e-5)
        and max(scores.values()) <= scores["class1/4.png"] + 1e-6
    )
    assert fingerprint in invoke(dae_env, "stats").output

    out = tmp_path / "rebuilt.png"
    denoised = invoke(
        dae_env, "denoise", str(query), "-o", str(out), "--noise", "gaussian", "--strength", "0.2"
    )
    assert denoised.exit_code == 0, denoised.output
    assert Image.open(out).size == (16, 16)

    # Back to the backbone: the collection is refused until it is re-embedded.
    refused = invoke(env, "search", str(query))
    assert refused.exit_code == 1 and "cbir reindex" in refused.output and fingerprint in refused.output
    reindexed = invoke(env, "reindex")
    assert reindexed.exit_code == 0, reindexed.output
    assert "re-embedded 24 images" in reindexed.output
    assert (
        json.loads(invoke(env, "search", str(query), "--json").output)[0]["original_name"] == "class1/4.png"
    )


def test_denoise_needs_an_autoencoder(env: dict[str, str], photos: Path, tmp_path: Path) -> None:
    result = invoke(env, "denoise", str(photos / "class0" / "0.png"), "-o", str(tmp_path / "out.png"))
    assert result.exit_code == 1
    assert "needs an autoencoder" in result.output and "CBIR_ENCODER=dae:" in result.output
    assert not (tmp_path / "out.png").exists()


def test_train_errors_say_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    missing = invoke(env, "train", "autoencoder", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m.pt"))
    assert missing.exit_code == 2 and "is not a directory" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    nothing = invoke(env, "train", "autoencoder", str(empty), "-o", str(tmp_path / "m.pt"), *TINY_FLAGS)
    assert nothing.exit_code == 2 and "no readable picture" in nothing.output
    bad = invoke(env, "train", "autoencoder", str(empty), "-o", str(tmp_path / "m.pt"), "--noise", "speckle")
    assert bad.exit_code == 2 and "unknown noise 'speckle'" in bad.output
    not_resumable = invoke(env, "train", "autoencoder", str(empty), "-o", str(tmp_path / "m.pt"), "--resume")
    assert not_resumable.exit_code == 2 and "does not exist" in not_resumable.output
    missing_model = invoke({**env, "CBIR_ENCODER": f"dae:{tmp_path / 'gone.pt'}"}, "index", str(empty))
    assert missing_model.exit_code == 1 and "gone.pt" in missing_model.output

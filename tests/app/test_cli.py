"""The `cbir` command on the tiny backbone: indexing, reruns, search, stats, evaluate, reindex and errors."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.config import Settings
from tests.helpers.images import image_bytes

runner = CliRunner()


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return {
        "CBIR_DATA_DIR": str(settings.data_dir),
        "CBIR_DATABASE_URL": settings.db_url,
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": "64",
        "CBIR_BATCH_SIZE": "4",
        "CBIR_COMMIT_EVERY": "4",
        "CBIR_DEVICE": "cpu",
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested images, a duplicate under another name, and files that are not images."""
    root = tmp_path / "photos"
    for seed in range(10):
        sub = root / f"part{seed % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{seed}.jpg").write_bytes(image_bytes(seed))
    (root / "part0" / "copy-of-img1.jpg").write_bytes(image_bytes(1))
    (root / "notes.txt").write_text("not an image")
    (root / "part1" / "broken.jpg").write_bytes(image_bytes(42, size=(300, 200))[:500])
    return root


def invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_index_skips_non_images_and_duplicates_and_rerun_adds_nothing(
    env: dict[str, str], folder: Path
) -> None:
    first = invoke(env, "index", str(folder))
    assert first.exit_code == 0, first.output
    assert "added 10, duplicates 1, skipped 2" in first.output
    assert "notes.txt" in first.output
    assert "broken.jpg" in first.output
    again = invoke(env, "index", str(folder))
    assert again.exit_code == 0, again.output
    assert "added 0, duplicates 11, skipped 2" in again.output
    rows = table_rows(invoke(env, "stats").output)
    assert (rows["count"], rows["indexed"]) == ("10", "10")


def table_rows(output: str) -> dict[str, str]:
    """A printed two-column table as {first cell: second cell}."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|┃]", line) if cell.strip()]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def test_search_prints_a_table_and_json(env: dict[str, str], folder: Path) -> None:
    invoke(env, "index", str(folder))
    query = folder / "part1" / "img4.jpg"
    table = invoke(env, "search", str(query), "-k", "3")
    assert table.exit_code == 0, table.output
    assert "img4.jpg" in table.output
    as_json = invoke(env, "search", str(query), "-k", "3", "--json")
    rows = json.loads(as_json.output)
    assert len(rows) == 3
    assert rows[0]["original_name"] == "part1/img4.jpg" and rows[0]["metadata"] == {}
    assert rows[0]["score"] > 0.999


def test_evaluate_prints_figures_and_a_json_last_line(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "classes"
    for label in range(3):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(4):
            (root / f"class{label}" / f"{i}.png").write_bytes(image_bytes(label * 100 + i, fmt="PNG"))
    result = invoke(env, "evaluate", str(root))
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["images"] == 12
    assert figures["classes"] == 3
    assert {"mAP", "P@1", "P@5", "P@10", "encoder"} <= set(figures)
    assert 0.0 < figures["mAP"] <= 1.0
    # Four images: P@5 and P@10 have too few answers to exist, and the table says so.
    shutil.rmtree(root / "class2")
    for name in ("2.png", "3.png"):
        (root / "class0" / name).unlink()
        (root / "class1" / name).unlink()
    small = invoke(env, "evaluate", str(root))
    assert small.exit_code == 0, small.output
    assert "n/a" in small.output and "P@5" not in json.loads(small.output.strip().splitlines()[-1])


def test_changing_the_encoder_needs_reindex(env: dict[str, str], folder: Path) -> None:
    invoke(env, "index", str(folder))
    other = {**env, "CBIR_HEAD": "mac"}
    refused = runner.invoke(app, ["search", str(folder / "part0" / "img0.jpg")], env=other)
    assert refused.exit_code == 1
    assert "cbir reindex" in refused.output
    done = invoke(other, "reindex")
    assert done.exit_code == 0, done.output
    assert "re-embedded 10 images" in done.output
    found = invoke(other, "search", str(folder / "part0" / "img0.jpg"), "--json")
    assert json.loads(found.output)[0]["original_name"] == "part0/img0.jpg"  # as indexed: under the folder


def test_errors_are_one_line_and_non_zero(env: dict[str, str], tmp_path: Path) -> None:
    missing = runner.invoke(app, ["index", str(tmp_path / "nowhere")], env=env)
    assert missing.exit_code == 2
    assert "does not exist: give a directory, a glob pattern" in missing.output
    (tmp_path / "q.png").write_bytes(image_bytes(1, fmt="PNG"))
    if "CBIR_DATABASE_URL" not in env or env["CBIR_DATABASE_URL"].startswith("sqlite"):
        # A SQLite collection lives in its data directory: a mistyped one must not become a new collection.
        # (A server database exists whatever the data directory says.)
        typo = runner.invoke(app, ["stats"], env={**env, "CBIR_DATA_DIR": str(tmp_path / "typo")})
        assert typo.exit_code == 1 and "there is no collection at" in typo.output
        assert not (tmp_path / "typo").exists(), "a reading command created an empty collection"
        for reading in (["search", str(tmp_path / "q.png")], ["duplicates"], ["keys", "list"]):
            refused = runner.invoke(app, [*reading, "--data-dir", str(tmp_path / "typo")], env=env)
            assert refused.exit_code == 1 and "check --data-dir" in refused.output, (reading, refused.output)
        assert not (tmp_path / "typo").exists()
    unknown = runner.invoke(app, ["index", str(tmp_path)], env={**env, "CBIR_BACKBONE": "nonesuch"})
    assert unknown.exit_code == 1
    assert "nonesuch" in unknown.output
    not_image = tmp_path / "q.jpg"
    not_image.write_text("text")
    invalid = runner.invoke(app, ["search", str(not_image)], env=env)
    assert invalid.exit_code == 1
    assert "error" in invalid.output


def test_db_upgrade(env: dict[str, str]) -> None:
    result = invoke(env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "now at head" in result.output


def test_bad_settings_are_one_line_naming_the_flag_or_variable(env: dict[str, str]) -> None:
    flag = runner.invoke(app, ["index-build", "--type", "annoy"], env=env)
    assert flag.exit_code == 2
    assert "setting index_type (its command-line flag) is 'annoy': Input should be" in flag.output
    variable = runner.invoke(app, ["stats"], env={**env, "CBIR_BATCH_SIZE": "0"})
    assert variable.exit_code == 2
    assert "setting batch_size (CBIR_BATCH_SIZE) is '0': Input should be greater than" in variable.output
    unparsed = runner.invoke(app, ["stats"], env={**env, "CBIR_CORS_ORIGINS": "https://x"})
    assert unparsed.exit_code == 2 and "take JSON" in unparsed.output
    for result in (flag, variable, unparsed):
        assert "Traceback" not in result.output and "errors.pydantic.dev" not in result.output


@pytest.fixture
def root_logging() -> Iterator[None]:
    """`cbir serve` configures the root logger for the process: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_serve_refuses_a_bad_encoder_in_one_line_before_it_starts(env: dict[str, str]) -> None:
    # Each of these would block in uvicorn.run if serve got that far.
    unknown = runner.invoke(app, ["serve", "--head", "foo"], env=env)
    assert unknown.exit_code == 1 and "error:" in unknown.output and "foo" in unknown.output
    assert "Traceback" not in unknown.output
    invoke(env, "db", "upgrade")
    invoke(env, "stats")  # the collection now records the tiny backbone with gap
    other = runner.invoke(app, ["serve", "--head", "mac"], env=env)
    assert other.exit_code == 1 and "cbir reindex" in other.output

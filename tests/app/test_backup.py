"""`cbir backup` / `cbir restore`: a consistent copy taken while the collection is being written, that
restores into a new data directory answering searches like the original did."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from app.cli import app as cli
from app.collection.facade import Collection
from app.config import Settings
from app.encoders import encoder_from_settings
from app.jobs import bulk
from app.jobs.backup import BackupError, backup, restore
from app.main import create_app
from tests.helpers.images import image_bytes
from tests.helpers.settings import tiny_settings

runner = CliRunner()
IMAGES = 48


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(IMAGES):
        (folder / f"p{seed:02d}.jpg").write_bytes(image_bytes(seed))
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only (this module replaces the shared fixture that also runs on PostgreSQL): backups use
    SQLite's online backup API; a PostgreSQL collection is refused with a pointer to pg_dump (tested)."""
    return tiny_settings(tmp_path)


def env_for(settings: Settings, data_dir: Path | None = None) -> dict[str, str]:
    return {
        "CBIR_DATA_DIR": str(data_dir or settings.data_dir),
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": str(settings.max_side),
        "CBIR_DEVICE": "cpu",
    }


def db_count(settings: Settings) -> int:
    with sqlite3.connect(settings.data_dir / "cbir.db") as connection:
        return int(connection.execute("SELECT count(*) FROM images").fetchone()[0])


def search(client: TestClient, data: bytes, k: int) -> list[tuple[int, float]]:
    # Plain nearest neighbours: re-ranking depends on the whole collection, which the backup cuts short.
    plain = {"query_expansion": "0", "database_augmentation": "0"}
    response = client.post("/search", files={"file": ("q.jpg", data)}, data={"k": str(k), **plain})
    assert response.status_code == 200, response.text
    return [(hit["id"], hit["score"]) for hit in response.json()["results"]]


@pytest.fixture
def served(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_backup_during_a_bulk_index_restores_into_a_new_data_dir_that_searches_like_the_original(
    settings: Settings, photos: Path, tmp_path: Path
) -> None:
    collection = Collection.open(settings, encoder_from_settings(settings))
    paused = threading.Event()
    snapshot_taken = threading.Event()
    committed_at_snapshot: list[int] = []
    failures: list[BaseException] = []

    def on_progress(done: int, _images: int) -> None:
        # Hold the job after two committed batches until the backup has its snapshot, so the backup provably
        # lands mid-index; from then on both run at once (files copied while later batches commit and the
        # index file is rewritten every `commit_every` images).
        if done == 10 and not paused.is_set():
            committed_at_snapshot.append(db_count(settings))
            paused.set()
            assert snapshot_taken.wait(timeout=60), "the backup never took its snapshot"

    def take_backup() -> None:
        try:
            assert paused.wait(timeout=60), "the bulk job never reached the pause"
            backup(settings, tmp_path / "backup", on_snapshot=snapshot_taken.set)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            snapshot_taken.set()

    worker = threading.Thread(target=take_backup)
    worker.start()
    report = bulk.index_files(collection, bulk.list_files(photos), on_progress=on_progress)
    worker.join(timeout=60)
    collection.close()
    assert not failures, failures
    assert report.added == IMAGES

    manifest = json.loads((tmp_path / "backup" / "backup.json").read_text())
    [expected] = committed_at_snapshot
    assert 0 < expected < IMAGES
    assert manifest["images"] == manifest["files"] == expected

    restored_dir = tmp_path / "restored"
    result = runner.invoke(
        cli,
        ["restore", str(tmp_path / "backup"), "--data-dir", str(restored_dir)],
        env=env_for(settings, restored_dir),
    )
    assert result.exit_code == 0, result.output
    assert f"restored {expected} images" in result.output

    # Verification off: it checks a query's first plain candidates, which differ between the whole original
    # and the backed-up part, so verified scores would differ though the restored rows and vectors are equal.
    settings = settings.model_copy(update={"verify_candidates": 0})
    restored_settings = settings.model_copy(update={"data_dir": restored_dir})
    with TestClient(create_app(settings)) as original, TestClient(create_app(restored_settings)) as copy:
        assert original.get("/stats").json()["count"] == IMAGES
        assert copy.get("/stats").json()["count"] == expected
        backed_up = {hit_id for hit_id, _ in search(copy, image_bytes(0), IMAGES)}
        assert len(backed_up) == expected
        for seed in (0, 3, expected - 1, expected, IMAGES - 1, 1000):
            query = image_bytes(seed)
            # The original, restricted to the images the backup holds, must rank exactly as the copy does.
            everything = search(original, query, IMAGES)
            want = [(i, s) for i, s in everything if i in backed_up][:5]
            got = search(copy, query, 5)
            assert [i for i, _ in got] == [i for i, _ in want], seed
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
        for image_id in sorted(backed_up)[:3]:
            assert (
                copy.get(f"/images/{image_id}/file").content
                == original.get(f"/images/{image_id}/file").content
            )


def test_backup_of_a_running_service_restores_identically(
    settings: Settings, served: TestClient, tmp_path: Path
) -> None:
    for seed in range(12):
        served.post(
            "/images", files={"file": (f"{seed}.jpg", image_bytes(seed))}, data={"metadata": '{"n": 1}'}
        )
    result = runner.invoke(cli, ["backup", str(tmp_path / "b")], env=env_for(settings))
    assert result.exit_code == 0, result.output
    assert "backed up 12 images (12 files" in result.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "backup.json",
        "cbir.db",
        "images",
        "index.faiss",
    ]
    # One self-contained database file: no WAL beside it.
    assert not list((tmp_path / "b").glob("cbir.db-*"))

    target = tmp_path / "new"
    assert (
        runner.invoke(
            cli, ["restore", str(tmp_path / "b"), "--data-dir", str(target)], env=env_for(settings, target)
        ).exit_code
        == 0
    )
    with TestClient(create_app(settings.model_copy(update={"data_dir": target}))) as copy:
        for seed in (0, 5, 99):
            assert search(copy, image_bytes(seed), 12) == search(served, image_bytes(seed), 12)
        assert copy.get("/images/3").json()["metadata"] == {"n": 1}


def test_rows_deleted_while_the_backup_runs_are_left_out(
    settings: Settings, served: TestClient, tmp_path: Path
) -> None:
    for seed in range(5):
        served.post("/images", files={"file": (f"{seed}.jpg", image_bytes(seed))})

    def delete_one() -> None:
        assert served.delete("/images/2").status_code == 200

    report = backup(settings, tmp_path / "b", on_snapshot=delete_one)
    assert report.images == 4 and report.deleted_during_backup == 1
    restore(tmp_path / "b", settings.model_copy(update={"data_dir": tmp_path / "new"}))
    with TestClient(create_app(settings.model_copy(update={"data_dir": tmp_path / "new"}))) as copy:
        assert copy.get("/stats").json()["count"] == 4
        assert copy.get("/images/2").status_code == 404
        assert {i for i, _ in search(copy, image_bytes(2), 10)} == {1, 3, 4, 5}
    restored = create_engine(settings.model_copy(update={"data_dir": tmp_path / "new"}).db_url)
    with restored.connect() as connection:  # the dropped row's local features went with it
        featured = connection.execute(text("SELECT image_id FROM local_features")).scalars().all()
    restored.dispose()
    assert sorted(featured) == [1, 3, 4, 5]


def test_refusals_say_what_to_do(settings: Settings, served: TestClient, tmp_path: Path) -> None:
    served.post("/images", files={"file": ("a.jpg", image_bytes(1))})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(BackupError, match="already exists and is not empty: give a new folder"):
        backup(settings, busy)
    with pytest.raises(BackupError, match="inside the data directory"):
        backup(settings, settings.data_dir / "backups")
    with pytest.raises(BackupError, match="no collection to back up"):
        backup(settings.model_copy(update={"data_dir": tmp_path / "nothing"}), tmp_path / "b0")
    with pytest.raises(BackupError, match="SQLite database only"):
        backup(settings.model_copy(update={"database_url": "postgresql://db/cbir"}), tmp_path / "b1")

    backup(settings, tmp_path / "b")
    with pytest.raises(BackupError, match="restore into a new or empty folder"):
        restore(tmp_path / "b", settings)
    with pytest.raises(BackupError, match="not a cbir backup"):
        restore(busy, settings.model_copy(update={"data_dir": tmp_path / "n1"}))
    # A damaged image file is caught by its hash, and nothing is left behind.
    [stored] = [p for p in (tmp_path / "b" / "images").rglob("*") if p.is_file()]
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BackupError, match=r"damaged: .* does not match the sha256"):
        restore(tmp_path / "b", settings.model_copy(update={"data_dir": tmp_path / "n2"}))
    assert not (tmp_path / "n2").exists()
    assert not list(tmp_path.glob(".n2.partial-*"))

    cli_error = runner.invoke(
        cli, ["restore", str(busy), "--data-dir", str(tmp_path / "n3")], env=env_for(settings)
    )
    assert cli_error.exit_code == 1
    assert "is not a cbir backup" in cli_error.output


def test_a_referenced_file_missing_at_backup_time_is_named_by_backup_and_restore(
    settings: Settings, photos: Path, tmp_path: Path
) -> None:
    env = env_for(settings)
    indexed = runner.invoke(cli, ["index", str(photos), "--no-copy"], env=env)
    assert indexed.exit_code == 0, indexed.output
    (photos / "p07.jpg").unlink()  # the user tidied the folder the collection references
    with sqlite3.connect(settings.data_dir / "cbir.db") as connection:
        [(lost_id,)] = connection.execute("SELECT id FROM images WHERE original_name = 'p07.jpg'").fetchall()
    saved = runner.invoke(cli, ["backup", str(tmp_path / "b")], env=env)
    assert saved.exit_code == 0, saved.output
    assert "warning: 1 images have no file" in saved.output
    assert f"image {lost_id}: its file is missing from the collection" in saved.output

    new = tmp_path / "new"
    restored = runner.invoke(cli, ["restore", str(tmp_path / "b"), "--data-dir", str(new)], env=env)
    assert restored.exit_code == 0, restored.output
    assert f"restored {IMAGES} images ({IMAGES - 1} files" in restored.output
    assert "warning: 1 images have no file" in restored.output
    assert (
        f"image {lost_id}: its file is missing from the collection when the backup was taken"
        in restored.output
    )
    with TestClient(create_app(settings.model_copy(update={"data_dir": new}))) as copy:
        assert copy.get(f"/images/{lost_id}/file").status_code == 404
        assert copy.get(f"/images/{lost_id % IMAGES + 1}/file").status_code == 200
        assert copy.get("/stats").json()["count"] == IMAGES

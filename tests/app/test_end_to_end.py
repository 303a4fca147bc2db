"""End to end on the embedded default (EfficientNet-Lite0, GAP) and real Corel-1K photos: the real `cbir`
command in subprocesses, a real uvicorn server on a free port, and a bulk job killed halfway. The tests that
kill processes run on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from index import VectorIndex
from tests.helpers.databases import DATABASES, fresh_database
from tests.helpers.servers import database_url, row_count
from tests.helpers.servers import start_server as start_process
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

PER_CLASS = 20


def cbir(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


@pytest.fixture(scope="module")
def subset(corel_module: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first PER_CLASS photos of every Corel class, linked into a folder of the same layout."""
    root = tmp_path_factory.mktemp("corel-subset")
    for folder in sorted(p for p in corel_module.iterdir() if p.is_dir()):
        (root / folder.name).mkdir()
        for photo in sorted(folder.iterdir())[:PER_CLASS]:
            (root / folder.name / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def corel_module() -> Path:
    from tests.helpers.paths import COREL

    if not COREL.is_dir():
        pytest.fail(f"the Corel-1K dataset is missing at {COREL}")
    return COREL


def env_for(data_dir: Path, db_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "CBIR_DATA_DIR": str(data_dir), "CBIR_DEVICE": "cpu"}
    if db_url:
        env["CBIR_DATABASE_URL"] = db_url
    return env


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`cbir serve` on a free port, once /health answers 200."""
    return start_process(cbir("serve"), env)


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The multi-process tests run on SQLite and on a fresh PostgreSQL database."""
    with fresh_database(request.param) as url:
        yield url


@pytest.fixture(scope="module")
def server(corel_module: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cbir index` of the whole of Corel-1K, then `cbir serve` on a free port."""
    data_dir = tmp_path_factory.mktemp("served") / "data"
    env = env_for(data_dir)
    indexed = subprocess.run(
        cbir("index", str(corel_module)), env=env, capture_output=True, text=True, timeout=900
    )
    assert indexed.returncode == 0, indexed.stderr
    assert "added 1000, duplicates 0, skipped 0" in indexed.stdout
    process, url = start_server(env)
    try:
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def test_search_over_http_finds_the_same_class(server: str, corel_module: Path) -> None:
    """Two queries per class: the image itself comes first and at least 8 of the top 10 share its class."""
    stats = httpx.get(f"{server}/stats").json()
    assert stats["count"] == 1000
    assert stats["encoder"].startswith("tf_efficientnet_lite0@imagenet-")
    assert stats["dimension"] == 1280
    for folder in sorted(p for p in corel_module.iterdir() if p.is_dir()):
        for photo in sorted(folder.iterdir())[:2]:
            response = httpx.post(
                f"{server}/search", files={"file": (photo.name, photo.read_bytes())}, timeout=60
            )
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert results[0]["path"] == f"{folder.name}/{photo.name}"  # as indexed: under its folder
            assert results[0]["score"] > 0.999
            same_class = sum(
                Path(hit["path"]).name.split("_")[:-1] == photo.name.split("_")[:-1] for hit in results
            )
            assert same_class >= 8, (photo.name, [hit["original_name"] for hit in results])


def test_upload_and_file_round_trip_over_http(server: str, corel_module: Path) -> None:
    photo = sorted((corel_module / "horses").iterdir())[-1]
    known = httpx.post(f"{server}/images", files={"file": (photo.name, photo.read_bytes())}, timeout=60)
    assert known.status_code == 200
    assert known.json()["duplicate"] is True
    # Bytes after the JPEG's end marker: the same picture, new content, so a new image.
    data = photo.read_bytes() + b"new-content"
    created = httpx.post(
        f"{server}/images", files={"file": ("new.jpg", data)}, data={"metadata": '{"k": 1}'}, timeout=60
    )
    assert created.status_code == 201, created.text
    image = created.json()["image"]
    assert httpx.get(f"{server}{image['url']}").content == data
    found = httpx.post(f"{server}/search", files={"file": ("q.jpg", data)}, data={"k": "2"}, timeout=60)
    assert {hit["id"] for hit in found.json()["results"]} == {image["id"], known.json()["id"]}
    assert httpx.delete(f"{server}/images/{image['id']}").status_code == 200
    assert httpx.get(f"{server}/images/{image['id']}").status_code == 404


# Where the ten kills of the bulk job land, each a state of the job seen from outside (no random sleep): a
# process that has not imported anything yet, one whose database exists but holds no image (start-up,
# migrations, the first batches being decoded and embedded), then just after a commit has become visible
# (the job is between that commit and its index save, or embedding the next batch), at growing counts.
KILL_POINTS = ["at once", "database created", *(f"rows>={n}" for n in (1, 16, 17, 40, 64, 90, 120, 150))]


def wait_for_kill_point(point: str, process: subprocess.Popen[bytes], url: str) -> None:
    alive = lambda: process.poll() is None  # noqa: E731
    if point == "at once":
        return
    if point == "database created":
        wait_until(
            lambda: row_count(url, "alembic_version") > 0, "the job to create its database", alive=alive
        )
        return
    target = int(point.removeprefix("rows>="))
    wait_until(
        lambda: row_count(url) >= target,
        f"the job to commit {target} images",
        300,
        alive=alive,
        seen=lambda: row_count(url),
    )


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_bulk_job_killed_ten_times_loses_nothing_and_stores_nothing_twice(
    subset: Path, tmp_path: Path, db_url: str | None
) -> None:
    """SIGKILL at ten chosen points of the job (KILL_POINTS), then a rerun: every photo stored once, with
    its file and its vector, whatever was in flight at each kill."""
    data_dir = tmp_path / "data"
    url = database_url(data_dir, db_url)
    env = {**env_for(data_dir, db_url), "CBIR_COMMIT_EVERY": "16"}
    counts = []
    for point in KILL_POINTS:
        before = row_count(url)
        process = subprocess.Popen(
            cbir("index", str(subset)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if point.startswith("rows>=") and int(point.removeprefix("rows>=")) <= before:
            point = f"rows>={before + 1}"  # this run must commit something of its own before the kill
        wait_for_kill_point(point, process, url)
        assert process.poll() is None, f"the job finished before the kill point {point!r}; raise PER_CLASS"
        workers = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        process.wait()
        counts.append(row_count(url))

        # Its reader processes go with it, instead of waiting forever on a pipe nobody reads.
        def gone(ws: list[psutil.Process] = workers) -> bool:
            return not any(_running(w) for w in ws)

        wait_until(gone, f"the workers of the job killed at {point}", 30)
    assert counts[-1] < 10 * PER_CLASS, counts
    assert counts[-1] >= 150, counts  # the last kill came after 150 rows were seen committed

    rerun = subprocess.run(cbir("index", str(subset)), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"added {10 * PER_CLASS - counts[-1]}, duplicates {counts[-1]}, skipped 0" in rerun.stdout
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, sha256, source_path FROM images ORDER BY id")).all()
        featured = connection.execute(text("SELECT image_id FROM local_features ORDER BY image_id")).all()
        fingerprint = connection.execute(text("SELECT DISTINCT encoder FROM images")).scalar_one()
    engine.dispose()
    ids = [row[0] for row in rows]
    assert len(ids) == 10 * PER_CLASS
    assert [row[0] for row in featured] == ids  # every row's local features, committed with it
    assert len({row[1] for row in rows}) == len(rows)
    assert sorted(Path(row[2]).name for row in rows) == sorted(p.name for p in subset.rglob("*.jpg"))
    index = VectorIndex.load(data_dir / "index.faiss", dim=1280, fingerprint=fingerprint)
    assert index.ids().tolist() == ids
    stored = sorted(p.stem for p in (data_dir / "images").rglob("*") if p.is_file())
    assert stored == sorted(row[1] for row in rows), "orphan or missing files"

    query = sorted((subset / "dinosaurs").iterdir())[3]
    found = subprocess.run(
        cbir("search", str(query), "-k", "3", "--json"), env=env, capture_output=True, text=True, timeout=120
    )
    assert Path(json.loads(found.stdout)[0]["path"]).name == query.name


def test_server_killed_during_uploads_keeps_every_acknowledged_image_once(
    subset: Path, tmp_path: Path, db_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    env = env_for(data_dir, db_url)
    photos = sorted(subset.rglob("*.jpg"))[::3][:60]
    process, url = start_server(env)
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def uploader(chunk: list[Path]) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for photo in chunk:
                if stop.is_set():
                    return
                try:
                    response = client.post("/images", files={"file": (photo.name, photo.read_bytes())})
                except httpx.TransportError:
                    return
                if response.status_code == 201:
                    acknowledged[photo.name] = response.json()["id"]

    threads = [threading.Thread(target=uploader, args=(photos[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: len(acknowledged) >= 12, "12 uploads to be acknowledged", 300, seen=lambda: acknowledged
    )
    process.kill()  # SIGKILL with uploads in flight
    stop.set()
    for thread in threads:
        thread.join(60)
    process.wait()
    assert 12 <= len(acknowledged) < len(photos)

    process, url = start_server(env)
    try:
        stats = httpx.get(f"{url}/stats").json()
        assert stats["count"] == stats["indexed"] >= len(acknowledged)
        for name, image_id in acknowledged.items():
            assert httpx.get(f"{url}/images/{image_id}").json()["original_name"] == name
        for probe in [photo for photo in photos if photo.name in acknowledged][:3]:  # found, and first
            hits = httpx.post(f"{url}/search", files={"file": ("q.jpg", probe.read_bytes())}, timeout=60)
            assert hits.json()["results"][0]["id"] == acknowledged[probe.name]
        for photo in photos:  # everything again: the committed ones are duplicates, the rest new
            response = httpx.post(
                f"{url}/images", files={"file": (photo.name, photo.read_bytes())}, timeout=60
            )
            assert response.status_code in (200, 201), response.text
            if photo.name in acknowledged:
                body = response.json()
                assert (body["duplicate"], body["id"]) == (True, acknowledged[photo.name])
        stats = httpx.get(f"{url}/stats").json()
        assert stats["count"] == stats["indexed"] == len(photos)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    engine = create_engine(database_url(data_dir, db_url))
    with engine.connect() as connection:
        hashes = sorted(row[0] for row in connection.execute(text("SELECT sha256 FROM images")))
    engine.dispose()
    stored = sorted(p.name.split(".")[0] for p in (data_dir / "images").rglob("*") if p.is_file())
    assert stored == hashes, "orphan, pending or missing files"

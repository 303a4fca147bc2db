"""End to end on the embedded default (EfficientNet-Lite0, GAP) and real Corel-1K photos: the real `cbir`
command in subprocesses, a real uvicorn server on a free port, and a bulk job killed halfway."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from index import VectorIndex

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "CBIR_DATA_DIR": str(data_dir), "CBIR_DEVICE": "cpu"}


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`cbir serve` on a free port, once /health answers 200."""
    port = free_port()
    process = subprocess.Popen(cbir("serve", "--port", str(port)), env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.3)
    process.kill()
    pytest.fail("the server did not become healthy in 120 s")


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


def db_count(database: Path) -> int:
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            return int(connection.execute("SELECT count(*) FROM images").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet, or mid-migration
        return 0


def test_bulk_job_killed_ten_times_loses_nothing_and_stores_nothing_twice(
    subset: Path, tmp_path: Path
) -> None:
    """SIGKILL at ten random moments, then a rerun. Three kills land early (start-up, migrations, first
    batches) after a random delay; seven land after a random number of further commits, so they fall
    among decoding, inference, commits and index saves whatever the machine's speed."""
    data_dir = tmp_path / "data"
    database = data_dir / "cbir.db"
    env = {**env_for(data_dir), "CBIR_COMMIT_EVERY": "16"}
    rng = random.Random(20261123)
    counts = []
    for round_ in range(10):
        before = db_count(database)
        process = subprocess.Popen(
            cbir("index", str(subset)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if round_ < 3:
            time.sleep(rng.uniform(0.2, 3.0))
        else:
            target = before + rng.randint(1, 20)
            deadline = time.monotonic() + 180
            while db_count(database) < target and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        assert process.poll() is None, "the job finished before it could be killed; raise PER_CLASS"
        process.kill()
        process.wait()
        counts.append(db_count(database))
    assert counts[-1] < 10 * PER_CLASS, counts
    assert any(c > 0 for c in counts), counts

    rerun = subprocess.run(cbir("index", str(subset)), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"added {10 * PER_CLASS - counts[-1]}, duplicates {counts[-1]}, skipped 0" in rerun.stdout
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT id, sha256, source_path FROM images ORDER BY id").fetchall()
        fingerprint = connection.execute("SELECT DISTINCT encoder FROM images").fetchone()[0]
    ids = [row[0] for row in rows]
    assert len(ids) == 10 * PER_CLASS
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
    subset: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = env_for(data_dir)
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
    deadline = time.monotonic() + 300
    while len(acknowledged) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
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
        probe = subset / "elephants" / next(iter(n for n in acknowledged if n.startswith("elephants")), "")
        if probe.is_file():
            hits = httpx.post(f"{url}/search", files={"file": ("q.jpg", probe.read_bytes())}).json()[
                "results"
            ]
            assert hits[0]["id"] == acknowledged[probe.name]
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
    with sqlite3.connect(data_dir / "cbir.db") as connection:
        hashes = sorted(row[0] for row in connection.execute("SELECT sha256 FROM images"))
    stored = sorted(p.name.split(".")[0] for p in (data_dir / "images").rglob("*") if p.is_file())
    assert stored == hashes, "orphan, pending or missing files"

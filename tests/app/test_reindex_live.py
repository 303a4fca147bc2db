"""`cbir reindex` of a 1,000-image collection while `cbir serve` answers a search loop over HTTP.

Real processes (the tiny random backbone keeps it short: the code path is the one any encoder takes): the
whole of Corel-1K indexed with GAP, a server on a free port, a thread searching without pause, and
`cbir reindex` to MAC in another process. Every search must succeed, some while the reindex runs, and the
server must end up answering with the new encoder without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.databases import DATABASES, fresh_database
from tests.helpers.servers import start_server
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# `cbir` with the test backbones registered (tests/helpers/backbones.py), as a subprocess can run it.
CBIR = [sys.executable, "-c", "import tests.helpers.backbones; from app.cli import main; main()"]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    with fresh_database(request.param) as url:
        yield url


def test_reindex_switches_a_served_collection_while_searches_go_on(
    tmp_path: Path, db_url: str | None
) -> None:
    from tests.helpers.paths import COREL

    if not COREL.is_dir():
        pytest.fail(f"the Corel-1K dataset is missing at {COREL}")
    env = {
        **os.environ,
        "CBIR_DATA_DIR": str(tmp_path / "data"),
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": "64",
        "CBIR_DEVICE": "cpu",
        "CBIR_LOG_FORMAT": "text",
        "PYTHONPATH": str(ROOT),
        **({"CBIR_DATABASE_URL": db_url} if db_url else {}),
    }
    indexed = subprocess.run(
        [*CBIR, "index", str(COREL), "--no-copy"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert indexed.returncode == 0, indexed.stderr
    assert "added 1000" in indexed.stdout

    queries = [
        photo.read_bytes() for folder in sorted(COREL.iterdir()) for photo in sorted(folder.iterdir())[:3]
    ]
    errors: list[str] = []
    encoders: list[str] = []  # the encoder of each search answered, in order
    stop = threading.Event()
    server, url = start_server([*CBIR, "serve"], env, cwd=ROOT)

    def search_loop() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            n = 0
            while not stop.is_set():
                try:
                    response = client.post("/search", files={"file": ("q.jpg", queries[n % len(queries)])})
                    if response.status_code != 200 or not response.json()["results"]:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                    else:
                        encoders.append(response.json()["encoder"])
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                n += 1

    try:
        old = httpx.get(f"{url}/stats").json()["encoder"]
        loop = threading.Thread(target=search_loop)
        loop.start()
        wait_until(lambda: len(encoders) >= 1, "a first search to be answered", seen=lambda: errors)
        started = len(encoders)  # searches answered before the reindex started
        reindexed = subprocess.run(
            [*CBIR, "reindex"],
            env={**env, "CBIR_HEAD": "mac"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        finished = len(encoders)  # ... and once it had finished
        assert reindexed.returncode == 0, reindexed.stderr
        assert "re-embedded 1000 images" in reindexed.stdout
        new = reindexed.stdout.split(" with ")[1].split(";")[0]
        assert new != old and "/mac/" in new
        wait_until(
            lambda: encoders[-1] == new,
            f"the server to answer with the new encoder {new}",
            300,  # bounds a hang only: a loaded machine may take minutes
            seen=lambda: encoders[-1],
        )
        stop.set()
        loop.join(timeout=60)
    finally:
        stop.set()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)

    assert errors == []
    during = encoders[started:finished]
    assert during and set(during) <= {old, new}, "no search completed while the reindex ran"
    assert encoders[0] == old
    switched = encoders.index(new)
    assert set(encoders[:switched]) == {old} and set(encoders[switched:]) == {new}, "the encoder flip-flopped"

"""`cbir reindex` of a 1,000-image collection while `cbir serve` answers a search loop over HTTP.

Real processes (the tiny random backbone keeps it short: the code path is the one any encoder takes): the
whole of Corel-1K indexed with GAP, a server on a free port, a thread searching without pause, and
`cbir reindex` to MAC in another process. Every search must succeed, some while the reindex runs, and the
server must end up answering with the new encoder without a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# `cbir` with the test backbones registered (tests/helpers/backbones.py), as a subprocess can run it.
CBIR = [sys.executable, "-c", "import tests.helpers.backbones; from app.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reindex_switches_a_served_collection_while_searches_go_on(tmp_path: Path) -> None:
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

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*CBIR, "serve", "--port", str(port)], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    queries = [
        photo.read_bytes() for folder in sorted(COREL.iterdir()) for photo in sorted(folder.iterdir())[:3]
    ]
    errors: list[str] = []
    encoders: list[tuple[float, str]] = []
    stop = threading.Event()

    def search_loop() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            n = 0
            while not stop.is_set():
                try:
                    response = client.post("/search", files={"file": ("q.jpg", queries[n % len(queries)])})
                    if response.status_code != 200 or not response.json()["results"]:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                    else:
                        encoders.append((time.monotonic(), response.json()["encoder"]))
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                n += 1

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.2)
        old = httpx.get(f"{url}/stats").json()["encoder"]
        loop = threading.Thread(target=search_loop)
        loop.start()
        started = time.monotonic()
        reindexed = subprocess.run(
            [*CBIR, "reindex"],
            env={**env, "CBIR_HEAD": "mac"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        finished = time.monotonic()
        assert reindexed.returncode == 0, reindexed.stderr
        assert "re-embedded 1000 images" in reindexed.stdout
        new = reindexed.stdout.split(" with ")[1].split(";")[0]
        assert new != old and "/mac/" in new
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (encoders and encoders[-1][1] == new):
            time.sleep(0.1)
        stop.set()
        loop.join(timeout=60)
    finally:
        stop.set()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    assert errors == []
    during = [encoder for at, encoder in encoders if started <= at <= finished]
    assert during and set(during) <= {old, new}, "no search completed while the reindex ran"
    assert encoders[-1][1] == new, "the server did not switch to the new encoder"
    assert encoders[0][1] == old
    stats_after = [encoder for _, encoder in encoders]
    assert stats_after.index(new) > 0

"""Real processes for the multi-process tests: `cbir serve` replicas and a `milvus-lite server`.

A helper module rather than a conftest, so tests import what they use. Every wait is a wait_for with a
deadline (never a sleep that a slow machine could outrun).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.servers import free_port, start_server, stop_server
from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
# `cbir` with the test backbones registered (tests/helpers/backbones.py), as a subprocess can run it.
CBIR = [sys.executable, "-c", "import tests.helpers.backbones; from app.cli import main; main()"]
MILVUS_LITE = Path(sys.executable).with_name("milvus-lite")

# A server that is not listening yet, or an answer that is not the one awaited yet.
NOT_YET = (httpx.TransportError, AssertionError)


def tiny_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `cbir` process on the tiny random backbone (the code path of any encoder)."""
    return {
        **os.environ,
        "CBIR_DATA_DIR": str(data_dir),
        "CBIR_BACKBONE": "tiny_random",
        "CBIR_MAX_SIDE": "64",
        "CBIR_DEVICE": "cpu",
        "CBIR_LOG_FORMAT": "text",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@contextmanager
def cbir_serve(env: dict[str, str]) -> Iterator[str]:
    """`cbir serve` on a free port, yielding its URL once /health answers 200; SIGINT at the end."""
    process, url = start_server([*CBIR, "serve"], env, cwd=ROOT, timeout=120)
    try:
        yield url
    finally:
        stop_server(process)


class MilvusLite:
    """`milvus-lite server` on a fixed port and data folder, which can be killed and started again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [str(MILVUS_LITE), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(answers, "milvus-lite server to listen", 60, interval=0.1)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def milvus_lite(data_dir: Path) -> Iterator[MilvusLite]:
    server = MilvusLite(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.kill()

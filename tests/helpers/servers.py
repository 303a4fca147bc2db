"""Real `cbir` processes for the multi-process tests: a free port, a server once /health answers, a count of
the database's rows whichever the database is."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections import deque
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests.helpers.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_server(
    command: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 180.0
) -> tuple[subprocess.Popen[str], str]:
    """`command` + `--port N` started, returned once its /health answers 200 (fails saying why not)."""
    port = free_port()
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The server logs every request to stderr: unread, the pipe fills (64 KiB) and the server blocks on
    # its next log line, answering nothing more and never shutting down. A thread keeps reading it.
    tail: deque[str] = deque(maxlen=100)
    reader = threading.Thread(target=tail.extend, args=(process.stderr,), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: healthy(url),
            f"`cbir serve` to answer /health on {url}",
            timeout,
            alive=lambda: process.poll() is None,
        )
    except AssertionError as exc:
        process.kill()
        process.wait(timeout=30)
        reader.join(timeout=30)
        raise AssertionError(f"{exc}; its stderr ends: {''.join(tail)[-2000:]}") from None
    return process, url


def stop_server(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGINT (a graceful shutdown), then a kill if it has not exited within `timeout`."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def database_url(data_dir: Path, url: str | None) -> str:
    """The collection's database: `url` (PostgreSQL), or the SQLite file of `data_dir`."""
    return url or f"sqlite:///{data_dir / 'cbir.db'}"


def row_count(url: str, table: str = "images") -> int:
    """Rows in `table` now; 0 while the database or the table does not exist yet (start-up, migrations)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return 0  # connecting would create the file before the job does
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    except DBAPIError:
        return 0
    finally:
        engine.dispose()

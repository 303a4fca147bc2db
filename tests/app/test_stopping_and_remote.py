"""A bulk job stopped by a signal commits what it embedded; `cbir search --server` asks a running service."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from app.cli.progress import stop_on_signals
from app.config import Settings
from app.jobs import bulk
from app.main import create_app
from tests.app.test_cli import env as env  # the fixture
from tests.app.test_cli import invoke
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes
from tests.helpers.server import serve_in_thread


def test_sigterm_sets_the_stop_event_instead_of_killing() -> None:
    before = signal.getsignal(signal.SIGTERM)  # whatever an earlier test (a server) left installed
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5), "the handler set the event (and the process is still alive)"
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is back"


def test_a_stopped_bulk_job_commits_the_batches_in_flight(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for seed in range(40):
        (folder / f"{seed}.jpg").write_bytes(image_bytes(seed))
    collection = open_collection(settings)
    stop = threading.Event()
    try:
        report = bulk.index_files(
            collection,
            sorted(folder.iterdir()),
            on_progress=lambda done, added: stop.set(),  # asked to stop once the first files are done
            stop=stop,
        )
        assert report.stopped
        assert 0 < report.added < 40, report.added
        assert collection.count() == collection.index.ntotal == report.added, "committed, and indexed"
    finally:
        collection.close()


def test_search_with_server_asks_the_running_service(env: dict[str, str], settings: Settings) -> None:
    with serve_in_thread(create_app(settings)) as url:
        import httpx

        for seed in range(4):
            files = {"file": (f"{seed}.jpg", image_bytes(seed), "image/jpeg")}
            assert (
                httpx.post(
                    f"{url}/images", files=files, data={"metadata": json.dumps({"n": seed})}
                ).status_code
                == 201
            )
        query = Path(settings.data_dir).parent / "q.jpg"
        query.write_bytes(image_bytes(2))
        done = invoke(
            {**env, "CBIR_SERVER": url},
            "search",
            str(query),
            "-k",
            "2",
            "--json",
            "--filter",
            '{"n": {"$gte": 1}}',
        )
        assert done.exit_code == 0, done.output
        rows = json.loads(done.output)
        assert rows[0]["path"] == "2.jpg" and all(row["metadata"]["n"] >= 1 for row in rows)
        gone = invoke({**env, "CBIR_SERVER": "http://127.0.0.1:1"}, "search", str(query))
        assert gone.exit_code == 2 and "cannot reach the service" in gone.output

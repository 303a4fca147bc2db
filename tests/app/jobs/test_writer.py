"""The jobs' writer: the index file is saved every commit_every images, but never twice within the guard."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import Settings
from app.jobs import writer as writer_module
from app.jobs.embed import Embedded
from app.jobs.records import ImageRecord
from app.jobs.writer import MIN_SECONDS_BETWEEN_SAVES, BulkReport, Writer
from tests.helpers.collections import open_collection


def records(start: int, n: int) -> list[ImageRecord]:
    return [
        ImageRecord(f"{i:064x}", b"x", 10, 10, "JPEG", f"{i}.jpg", "/nowhere")
        for i in range(start, start + n)
    ]


def test_saves_follow_commit_every_and_the_time_guard(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"commit_every": 2})
    collection = open_collection(settings)
    saves: list[int] = []
    monkeypatch.setattr(collection, "save_index", lambda: saves.append(collection.index.ntotal))
    clock = {"now": 1000.0}
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: clock["now"])
    report = BulkReport()
    progress: list[tuple[int, int]] = []
    write = Writer(collection, report, copy_files=False, on_progress=lambda *done: progress.append(done))
    dim = collection.encoder.dim

    def batch(start: int) -> list[Embedded]:
        vectors = np.eye(2, dim, dtype=np.float32)
        return [Embedded.ready(records(start, 2), vectors)]

    write(batch(0))
    assert saves == []  # commit_every reached, but the guard has not run out since the writer began
    clock["now"] += MIN_SECONDS_BETWEEN_SAVES
    write(batch(2), dropped=1)
    assert saves == [4]
    write(batch(4))  # within the guard again
    assert saves == [4]
    write.finish()
    assert saves == [4, 6]
    assert (report.added, report.duplicates) == (6, 1)
    assert progress[-1] == (7, 6) and [done for done, _ in progress[:-1]] == list(range(1, 8))
    collection.close()

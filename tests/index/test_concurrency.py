"""The web service searches from a threadpool while uploads add and remove: none of that may crash or tear."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from index import VectorIndex
from tests.helpers.vectors import DIM, FINGERPRINT, unit_vectors
from tests.helpers.waiting import wait_until

WRITERS = 4
BATCHES = 25
BATCH = 20


def _run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Start all threads together and collect their exceptions, which threads otherwise swallow."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait()
                target()
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return errors


def test_concurrent_add_remove_search_and_save(tmp_path: Path) -> None:
    index = VectorIndex(DIM, FINGERPRINT)
    path = tmp_path / "index.faiss"
    writers_done = threading.Event()
    added: list[np.ndarray] = []

    def writer(w: int) -> Callable[[], None]:
        rng = np.random.default_rng(w)

        def run() -> None:
            for b in range(BATCHES):
                ids = np.arange(BATCH, dtype=np.int64) + (w * BATCHES + b) * BATCH
                vectors = unit_vectors(rng, BATCH)
                index.add(ids, vectors)
                added.append(ids)
                assert index.remove(ids[:2]) == 2  # uploads replaced/deleted while others search

        return run

    def searcher(seed: int) -> Callable[[], None]:
        rng = np.random.default_rng(100 + seed)

        def run() -> None:
            while not writers_done.is_set():
                scores, found = index.search(unit_vectors(rng, 3), k=10)
                assert scores.shape == found.shape and found.shape[1] <= 10
                assert (found >= 0).all(), "clipping to ntotal means no -1 padding, even mid-update"
                index.ids()
                len(index)

        return run

    def saver() -> None:
        while not writers_done.is_set():
            index.save(path)

    def all_writers() -> None:
        errors = _run_threads([writer(w) for w in range(WRITERS)])
        writers_done.set()
        if errors:
            raise errors[0]

    errors = _run_threads([all_writers, searcher(0), searcher(1), searcher(2), saver])
    assert errors == []

    expected = WRITERS * BATCHES * (BATCH - 2)
    assert len(index) == expected
    assert len(np.unique(index.ids())) == expected
    index.save(path)
    loaded = VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    np.testing.assert_array_equal(loaded.ids(), index.ids())


def test_snapshot_saved_during_adds_is_self_consistent(tmp_path: Path) -> None:
    """Every file written while adds run must load: header ntotal and index always agree."""
    index = VectorIndex(DIM, FINGERPRINT)
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 2000)
    path = tmp_path / "index.faiss"
    stop = threading.Event()
    loads: list[int] = []

    def grew(saves: int) -> bool:
        return len(loads) > saves

    def adder() -> None:
        try:
            for start in range(0, 2000, 10):
                index.add(np.arange(start, start + 10), vectors[start : start + 10])
                if start % 400 == 0:  # hand over: a save completes between these adds, whatever the clock
                    saves = len(loads)
                    wait_until(partial(grew, saves), "a save and load during the adds", 60)
        finally:
            stop.set()

    def save_and_load() -> None:
        while not stop.is_set():
            index.save(path)
            loads.append(len(VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)))

    assert _run_threads([adder, save_and_load]) == []
    assert len(loads) >= 5, "saves happened while the adds ran"
    assert loads == sorted(loads), "saves land in snapshot order"
    assert loads[-1] >= 1610, "a save after the last hand-over holds what was added before it"

"""A change reaches the feed in the transaction that makes it, so a follower reading at any time misses none.

Another process may read the feed at the very moment a write is committing. If a feed entry became visible
before the change itself (recorded in a transaction of its own, or after the commit), that reader would
apply the entry to the database as it still was, move its seq past it and never look again: a replica
would go on answering a deleted image or never find a new one. Here the follower reads the feed from
inside the writer's commit (the session's before_commit hook), then must answer like the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import event, text

from app.collection.facade import Collection
from app.config import Settings
from app.db.tables import Image
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_until


def add(collection: Collection, seeds: range) -> list[int]:
    return [collection.add_upload(image_bytes(seed), f"{seed}.jpg").image.id for seed in seeds]


def _bulk(collection: Collection, _ids: list[int]) -> None:
    items = [collection.prepare_upload(image_bytes(seed), f"{seed}.jpg") for seed in (7, 8)]
    collection.ingest_many(items, collection.embed_prepared(items))


WRITES: dict[str, Callable[[Collection, list[int]], object]] = {
    "upload": lambda c, _ids: c.add_upload(image_bytes(6), "6.jpg"),
    "bulk job": _bulk,
    "delete": lambda c, ids: c.delete(ids[1]),
    "bulk delete": lambda c, ids: c.delete_where(Image.id.in_(ids[:2])),
    "metadata": lambda c, ids: c.update_metadata(ids[0], {"tag": "new"}),
}


@pytest.mark.parametrize("write", WRITES)
def test_a_follower_reading_while_a_write_commits_misses_nothing(settings: Settings, write: str) -> None:
    writer, follower = open_collection(settings), open_collection(settings)
    ids = add(writer, range(4))
    follower.catch_up()
    commits: list[int] = []

    def read_the_feed_mid_commit(_session: object) -> None:
        commits.append(follower.catch_up())

    event.listen(writer.sessions, "before_commit", read_the_feed_mid_commit)
    try:
        WRITES[write](writer, ids)
    finally:
        event.remove(writer.sessions, "before_commit", read_the_feed_mid_commit)
    assert commits, "the write committed no transaction: the hook saw nothing"

    stored = sorted(writer.index.ids().tolist())
    stats = follower.stats()  # follows the feed first, as every search does
    assert (stats["count"], stats["indexed"]) == (len(stored), len(stored))
    assert sorted(follower.index.ids().tolist()) == stored
    hits = follower.search_image(image_bytes(0), len(stored))
    assert sorted(hit.image.id for hit in hits) == stored
    if write == "metadata":
        assert [hit.image.meta for hit in hits if hit.image.id == ids[0]] == [{"tag": "new"}]
    writer.close()
    follower.close()


def test_feed_seqs_follow_commit_order_when_writers_overlap(settings: Settings) -> None:
    """PostgreSQL hands out seqs at insert, not at commit: without the feed's advisory lock a writer that
    starts later but commits first puts seq n+1 in the feed while n is still invisible, and a follower that
    reads then moves past n for ever. Here writer B starts its write while A's is committing."""
    if not settings.database_url:
        pytest.skip("SQLite: its one write lock already orders every commit")
    first, second, follower = open_collection(settings), open_collection(settings), open_collection(settings)
    follower.catch_up()
    done: list[object] = []
    overlapped: list[int] = []

    def second_writer() -> None:
        done.append(second.add_upload(image_bytes(2), "2.jpg"))

    def waiters() -> int:
        with follower.sessions() as session:
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return int(session.execute(text(query)).scalar_one())

    def overlap(_session: object) -> None:
        if overlapped:
            return
        overlapped.append(1)
        thread = threading.Thread(target=second_writer, daemon=True)
        thread.start()
        # Until A commits, B either waits on the feed's lock (as it must) or, without it, commits at once.
        wait_until(lambda: done or waiters(), "the second writer to commit or to wait on the feed lock")
        follower.catch_up()
        threads.append(thread)

    threads: list[threading.Thread] = []
    event.listen(first.sessions, "before_commit", overlap)
    try:
        first.add_upload(image_bytes(1), "1.jpg")
    finally:
        event.remove(first.sessions, "before_commit", overlap)
    threads[0].join()
    assert len(done) == 1, "the second writer did not finish"
    stats = follower.stats()  # follows the feed first, as every search does
    assert (stats["count"], stats["indexed"]) == (2, 2), "the follower missed a write committed meanwhile"
    for collection in (first, second, follower):
        collection.close()

"""The change feed: two collections over one database stand for two processes (replicas, a CLI beside a
service); each follows what the other commits, additions, deletions and updates alike."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.collection.facade import Collection
from app.config import Settings
from app.db.changes import ADD, DELETE, OPS, UPDATE, last_seq, record_change
from app.db.tables import Change
from tests.app.collection.test_collection import add, open_collection
from tests.helpers.images import image_bytes


def _feed(collection: Collection) -> list[tuple[str, int | None]]:
    with collection.sessions() as session:
        return [
            (row.op, row.image_id) for row in session.execute(select(Change).order_by(Change.seq)).scalars()
        ]


def test_every_write_is_in_the_feed_in_commit_order(settings: Settings) -> None:
    collection = open_collection(settings)
    ids = add(collection, range(3))
    items = [collection.prepare_upload(image_bytes(seed), f"{seed}.jpg") for seed in (3, 4)]
    bulk, _ = collection.ingest_many(items, collection.embed_prepared(items))
    collection.delete(ids[1])
    collection.update_metadata(ids[0], {"sku": "B-2"})
    feed = _feed(collection)
    collection.close()
    assert bulk == 2
    assert feed == [
        (ADD, ids[0]),
        (ADD, ids[1]),
        (ADD, ids[2]),
        (ADD, ids[2] + 1),
        (ADD, ids[2] + 2),
        (DELETE, ids[1]),
        (UPDATE, ids[0]),
    ]


def test_a_process_follows_another_ones_adds_deletes_and_updates(settings: Settings) -> None:
    a, b = open_collection(settings), open_collection(settings)
    ids = add(a, range(4))
    top = b.search_image(image_bytes(2), 1)[0]  # B learns A's uploads before it answers
    assert (top.image.id, round(top.score, 3)) == (ids[2], 1.0)

    a.delete(ids[2])
    hits = b.search_image(image_bytes(2), 3)
    assert ids[2] not in [hit.image.id for hit in hits]
    assert len(hits) == 3  # still k: the collection holds 3
    assert b.stats()["indexed"] == b.stats()["count"] == 3

    a.update_metadata(ids[0], {"tag": "new"})
    [hit] = [h for h in b.search_image(image_bytes(0), 3) if h.image.id == ids[0]]
    assert hit.image.meta == {"tag": "new"}

    [fresh] = add(a, range(10, 11))
    assert fresh > max(ids)
    top = b.search_image(image_bytes(10), 1)[0]
    assert (top.image.id, round(top.score, 3)) == (fresh, 1.0)
    a.close()
    b.close()


def test_a_delete_between_feed_check_and_row_read_still_gives_k(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the retry in search_vectors covers: A's delete commits just after B's feed check."""
    a, b = open_collection(settings), open_collection(settings)
    ids = add(a, range(4))
    b.catch_up()
    vector = b.index.reconstruct(ids[0])[None, :]
    a.delete(ids[0])
    follow = b.catch_up
    checks: list[int] = []

    def late_on_first_check() -> int:
        checks.append(1)
        return 0 if len(checks) == 1 else follow()

    monkeypatch.setattr(b, "catch_up", late_on_first_check)
    [hits] = b.search_vectors(vector, 3)
    assert ids[0] not in [hit.image.id for hit in hits]
    assert len(hits) == 3
    assert len(checks) == 2
    a.close()
    b.close()


def test_the_feed_refuses_an_unknown_change(settings: Settings) -> None:
    collection = open_collection(settings)
    with pytest.raises(ValueError, match="one of " + ", ".join(OPS)), collection.sessions.begin() as session:
        record_change(session, "rename", [1])
    with collection.sessions() as session:
        assert last_seq(session) == 0
    collection.close()

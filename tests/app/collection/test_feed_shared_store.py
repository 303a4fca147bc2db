"""Following the change feed over a shared vector store (Milvus): the vectors are there already.

With FAISS each process holds its own index and adds what the feed names; with Milvus every process writes
to and reads from one store, so what the feed names has mostly been stored by whoever wrote it. A follower
that added it again would be refused by the store ("ids already in the store") and fail the search that
followed the feed; one that left a deleted id would answer fewer hits than asked.
"""

from __future__ import annotations

from app.config import Settings
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes


def test_followers_of_a_shared_store_add_nothing_twice_and_drop_what_is_deleted(settings: Settings) -> None:
    shared = settings.model_copy(update={"vector_store": "milvus"})
    writer, reader = open_collection(shared), open_collection(shared)
    ids = [writer.add_upload(image_bytes(seed), f"{seed}.jpg").image.id for seed in range(3)]
    for collection in (writer, reader):  # the writer meets its own adds in the feed, the reader another's
        hits = collection.search_image(image_bytes(1), 3)
        assert [hit.image.id for hit in hits][:1] == [ids[1]] and len(hits) == 3
    writer.delete(ids[0])
    hits = reader.search_image(image_bytes(0), 3)
    assert ids[0] not in [hit.image.id for hit in hits] and len(hits) == 2
    assert reader.stats()["indexed"] == reader.stats()["count"] == 2
    writer.close()
    reader.close()

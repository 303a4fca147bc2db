"""`cbir reindex`: staging beside the live index, the atomic swap, a running service following, resuming."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from app.collection.facade import Collection
from app.config import Settings
from app.db.tables import Image, StagedVector, StoredLocalFeatures
from app.encoders import encoder_from_settings
from app.errors import CollectionMismatchError
from app.jobs import reindex as reindex_module
from app.jobs.reindex import ReindexError, reindex_collection
from index import VectorIndex
from tests.helpers.collections import open_collection
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_until


def fill(collection: Collection, seeds: range) -> list[int]:
    return [collection.add_upload(image_bytes(seed), f"{seed}.jpg").image.id for seed in seeds]


def staged_rows(collection: Collection) -> int:
    with collection.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(StagedVector)) or 0)


def test_reindex_switches_and_a_running_service_follows(settings: Settings) -> None:
    service = open_collection(settings)
    ids = fill(service, range(10))
    old = service.encoder.fingerprint
    other = settings.model_copy(update={"head": "mac"})

    report = reindex_collection(other)

    new = encoder_from_settings(other).fingerprint
    assert report.switched and report.embedded == 10 and report.indexed == 10
    assert (report.previous, report.fingerprint) == (old, new)
    assert VectorIndex.load(settings.index_path, dim=16, fingerprint=new).ids().tolist() == ids
    with service.sessions() as session:
        assert set(session.scalars(select(Image.encoder))) == {new}
    assert staged_rows(service) == 0
    # The service answers on, and swaps the new encoder in as soon as it has built it.
    assert service.search_image(image_bytes(4), 1)[0].image.id == ids[4]
    wait_until(
        lambda: service.search_image(image_bytes(4), 1) and service.encoder.fingerprint == new,
        "the running service to follow the reindex to the new encoder",
        30,
    )
    assert service.index.fingerprint == new
    assert service.search_image(image_bytes(4), 1)[0].image.id == ids[4]
    assert service.stats()["encoder"] == new
    # Uploads now go in with the new encoder.
    [added] = fill(service, range(10, 11))
    assert service.get(added).encoder == new
    service.close()
    # The old configuration is refused with the collection's, and the new one opens.
    with pytest.raises(CollectionMismatchError, match="head=mac"):
        open_collection(settings)
    reopened = open_collection(other)
    assert reopened.index.ntotal == 11
    reopened.close()


def test_nothing_changes_until_the_swap_and_a_rerun_resumes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = open_collection(settings)
    fill(collection, range(12))
    other = settings.model_copy(update={"head": "mac"})
    calls = {"n": 0}
    real_stage = reindex_module._stage

    def interrupted(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        real_stage(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # killed after staging, before the swap

    monkeypatch.setattr(reindex_module, "_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reindex_collection(other)
    assert staged_rows(collection) == 12
    with collection.sessions() as session:
        assert set(session.scalars(select(Image.encoder))) == {collection.encoder.fingerprint}
    monkeypatch.setattr(reindex_module, "_stage", real_stage)
    report = reindex_collection(other)
    assert (report.reused, report.embedded, report.indexed) == (12, 0, 12)
    assert staged_rows(collection) == 0
    collection.close()


def test_images_added_while_staging_are_staged_before_the_swap(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = open_collection(settings)
    fill(service, range(6))
    other = settings.model_copy(update={"head": "mac"})
    real_stage = reindex_module._stage
    rounds = {"n": 0}

    def stage_while_uploads_arrive(*args: object, **kwargs: object) -> None:
        real_stage(*args, **kwargs)  # type: ignore[arg-type]
        rounds["n"] += 1
        if rounds["n"] == 1:
            fill(service, range(6, 9))  # the service still accepts uploads with the old encoder

    monkeypatch.setattr(reindex_module, "_stage", stage_while_uploads_arrive)
    report = reindex_collection(other)
    assert rounds["n"] == 2
    assert (report.embedded, report.indexed) == (9, 9)
    new = encoder_from_settings(other).fingerprint
    with service.sessions() as session:
        assert set(session.scalars(select(Image.encoder))) == {new}
    service.close()


def test_unreadable_files_stop_the_switch_and_say_what_to_do(settings: Settings) -> None:
    collection = open_collection(settings)
    ids = fill(collection, range(4))
    row = collection.get(ids[1])
    collection.files.path_for(row.sha256, row.format).unlink()
    with pytest.raises(ReindexError, match=r"could not be read.*DELETE /images"):
        reindex_collection(settings.model_copy(update={"head": "mac"}))
    with collection.sessions() as session:
        assert set(session.scalars(select(Image.encoder))) == {collection.encoder.fingerprint}
    assert np.array_equal(collection.index.ids(), np.array(ids))
    collection.close()


def feature_rows(collection: Collection) -> dict[int, bytes]:
    with collection.sessions() as session:
        rows = session.execute(select(StoredLocalFeatures.image_id, StoredLocalFeatures.data))
        return {image_id: data for image_id, data in rows}


@pytest.mark.parametrize("lacking", [0, 2])
def test_reindex_stores_the_local_features_older_rows_lack(settings: Settings, lacking: int) -> None:
    """A collection from before features were stored gets them; one that has them keeps them as they are."""
    collection = open_collection(settings)
    ids = fill(collection, range(4))
    before = feature_rows(collection)
    with collection.sessions.begin() as session:
        session.execute(delete(StoredLocalFeatures).where(StoredLocalFeatures.image_id.in_(ids[:lacking])))
    collection.close()

    assert reindex_collection(settings.model_copy(update={"head": "mac"})).switched

    reopened = open_collection(settings.model_copy(update={"head": "mac"}))
    assert feature_rows(reopened) == before  # the same bytes an upload stored
    reopened.close()

"""Local features are stored with their image, read back for verification, and go when the image goes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select

from app.collection.facade import Collection
from app.config import Settings
from app.db.tables import StoredLocalFeatures
from app.jobs import bulk
from app.search.verification import MIN_INLIERS
from models.local_features import extract
from tests.helpers.collections import open_collection
from tests.helpers.images import encode
from tests.models.test_local_features import edited, scene


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Pictures decoded at 256 px, the size ORB works at, so that an edited copy has clear evidence."""
    return settings.model_copy(update={"max_side": 256})


def scene_bytes(seed: int) -> bytes:
    return encode(scene(seed), "JPEG", quality=90)


def stored_rows(collection: Collection) -> dict[int, bytes]:
    with collection.sessions() as session:
        rows = session.execute(select(StoredLocalFeatures.image_id, StoredLocalFeatures.data))
        return {image_id: data for image_id, data in rows}


def derived(collection: Collection, image_id: int) -> bytes:
    picture = collection.picture_of(image_id)
    assert picture is not None
    return extract(picture).to_bytes()


def add_scenes(collection: Collection, seeds: range) -> list[int]:
    return [collection.add_upload(scene_bytes(seed), f"{seed}.jpg").image.id for seed in seeds]


def test_an_upload_stores_the_features_its_file_gives(settings: Settings) -> None:
    collection = open_collection(settings)
    [image_id] = add_scenes(collection, range(1))
    rows = stored_rows(collection)
    assert rows == {image_id: derived(collection, image_id)}
    assert len(rows[image_id]) >= 36 * 100  # a scene has corners: a hundred keypoints and more
    collection.close()


def test_a_bulk_job_stores_features_for_every_image(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed in range(6):
        (folder / f"{seed}.jpg").write_bytes(scene_bytes(seed))
    collection = open_collection(settings)
    assert bulk.index_directory(collection, folder).added == 6
    rows = stored_rows(collection)
    ids = collection.index.ids().tolist()
    assert sorted(rows) == sorted(ids)
    assert all(rows[i] == derived(collection, i) for i in ids)  # as an upload of the same file stores them
    collection.close()


def test_verification_reads_the_stored_features_without_the_files(settings: Settings) -> None:
    """With every file gone and nothing in memory, only the rows can say which result is the copy."""
    collection = open_collection(settings)
    ids = add_scenes(collection, range(5))
    for image_id in ids:
        collection.file_path(collection.get(image_id)).unlink()
    collection.local_features.clear()
    hits = collection.search_image(encode(edited(scene(2)), "JPEG"), 5)
    assert hits[0].image.id == ids[2] and hits[0].match == "same"
    assert (hits[0].inliers or 0) >= MIN_INLIERS  # local evidence (no features: 0 inliers)
    assert all((hit.inliers or 0) < MIN_INLIERS for hit in hits[1:])
    collection.close()


def test_deleting_an_image_deletes_its_features(settings: Settings) -> None:
    collection = open_collection(settings)
    ids = add_scenes(collection, range(3))
    collection.delete(ids[1])
    assert sorted(stored_rows(collection)) == [ids[0], ids[2]]
    collection.close()


def test_an_image_stored_without_features_gets_them_at_its_first_verification(settings: Settings) -> None:
    """A collection from before features were stored: derived from the file, then stored in the background."""
    collection = open_collection(settings)
    ids = add_scenes(collection, range(4))
    with collection.sessions.begin() as session:
        session.execute(delete(StoredLocalFeatures).where(StoredLocalFeatures.image_id.in_(ids[:2])))
    collection.local_features.clear()
    hits = collection.search_image(encode(edited(scene(0)), "JPEG"), 4)
    assert hits[0].image.id == ids[0] and (hits[0].inliers or 0) >= MIN_INLIERS
    collection.close()  # waits for the background write
    reopened = open_collection(settings)
    assert stored_rows(reopened) == {i: derived(reopened, i) for i in ids}
    reopened.close()

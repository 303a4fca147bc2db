"""Region queries on real photos: an object cut from one Corel photo, pasted into another, found by its box.

The embedded default encoder (Lite0, GAP) over 20 photos per Corel class. Each query is a photo of one class
with the middle of a photo of another class pasted in; searching with the box of the pasted part must find
the photo it came from in the top 5, where searching with the whole picture mostly finds the background's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.collection.facade import Collection
from app.config import Settings
from app.encoders import encoder_from_settings
from app.jobs import bulk
from bench.regions import PER_CLASS, composite, rank_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collection]:
    from tests.helpers.paths import COREL

    if not COREL.is_dir():
        pytest.fail(f"the Corel-1K dataset is missing at {COREL}")
    settings = Settings(data_dir=tmp_path_factory.mktemp("roi") / "data", device="cpu")
    opened = Collection.open(settings, encoder_from_settings(settings))
    paths = [photo for folder in sorted(COREL.iterdir()) for photo in sorted(folder.iterdir())[:PER_CLASS]]
    report = bulk.index_files(opened, paths, copy_files=False)
    assert report.added == len(paths)
    yield opened
    opened.close()


def test_a_box_around_a_pasted_object_finds_its_photo(collection: Collection) -> None:
    """One query per class: its 6th photo pasted into the 2nd photo of the class three folders on."""
    from tests.helpers.paths import COREL

    classes = sorted(folder for folder in COREL.iterdir() if folder.is_dir())
    ranks: dict[str, tuple[int | None, int | None]] = {}
    for position, folder in enumerate(classes):
        object_photo = sorted(folder.iterdir())[5]
        background_photo = sorted(classes[(position + 3) % len(classes)].iterdir())[1]
        query, box = composite(object_photo, background_photo)
        region = rank_of(object_photo.name, collection.search_image(query, 100, box=box))
        whole = rank_of(object_photo.name, collection.search_image(query, 100))
        ranks[folder.name] = (region, whole)
    found = [name for name, (region, _) in ranks.items() if region is not None and region <= 5]
    assert len(found) >= 7, ranks  # measured: 8 of 10 (README, "Region queries")
    better = [
        name for name, (region, whole) in ranks.items() if region is not None and (whole or 101) > region
    ]
    assert len(better) >= 9, ranks

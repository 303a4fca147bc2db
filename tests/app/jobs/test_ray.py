"""`cbir index --ray`: a local Ray runtime with 2 CPUs embeds Corel images; interrupted runs rerun cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from app.collection.facade import Collection
from app.config import Settings
from app.db.tables import Image, StoredLocalFeatures
from app.encoders import encoder_from_settings
from app.files.decoding import sha256_of
from app.jobs import bulk
from app.jobs.sources import SourceItem

ray = pytest.importorskip("ray", reason="Ray is the optional extra cbir[ray] (make test installs it)")

ROOT = Path(__file__).resolve().parents[3]
IMAGES = 300


def register_tiny_backbone() -> None:
    """Ray workers build the encoder themselves: the tests' tiny backbone must be registered there too."""
    import tests.helpers.backbones  # noqa: F401  (registers tiny_random on import)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    # Ray gives its raylet a fixed 30 s to register with the GCS (ray/_private/node.py); on 2 shared cores
    # a CI run once missed that at start-up, before any test code ran. Starting again is what a user does.
    for attempt in range(3):
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=200 * 1024 * 1024,
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},  # workers import `tests` (setup above)
            )
            break
        except Exception as error:  # Ray raises a bare Exception for this
            ray.shutdown()
            if "timed out during startup" not in str(error) or attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture
def items(corel: Path) -> list[SourceItem]:
    files = bulk.list_files(corel)[:IMAGES]
    return [
        SourceItem(path, {"n": n}, name=path.relative_to(corel).as_posix()) for n, path in enumerate(files)
    ]


def count_rows(collection: Collection) -> tuple[int, int]:
    with collection.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Image))
        distinct = session.scalar(select(func.count(func.distinct(Image.sha256))))
    return int(rows or 0), int(distinct or 0)


def test_actors_follow_the_cluster_gpus_else_its_cpus() -> None:
    from app.jobs.ray import RayPlan, plan

    assert plan({"CPU": 2.0}) == RayPlan(actors=2, gpus_per_actor=0.0, cpus_per_actor=1.0)
    assert plan({"CPU": 32.0, "GPU": 4.0}) == RayPlan(actors=4, gpus_per_actor=1.0, cpus_per_actor=7.0)
    assert plan({"CPU": 8.0}, actors=3).actors == 3


@pytest.mark.slow
def test_ray_indexes_corel_with_the_vectors_of_a_local_job(
    ray_runtime: None, settings: Settings, items: list[SourceItem], tmp_path: Path
) -> None:
    from app.jobs.ray import index_with_ray

    settings = settings.model_copy(update={"batch_size": 32})
    collection = Collection.open(settings, encoder_from_settings(settings))
    report = index_with_ray(collection, items, address=None, setup=register_tiny_backbone)
    assert (report.added, report.duplicates, report.skipped) == (IMAGES, 0, [])
    assert count_rows(collection) == (IMAGES, IMAGES) and collection.index.ntotal == IMAGES

    local_settings = settings.model_copy(update={"data_dir": tmp_path / "local"})
    local = Collection.open(local_settings, encoder_from_settings(local_settings))
    bulk.index_files(local, [item.path for item in items[:8]])
    for item in items[:8]:
        digest = sha256_of(item.path.read_bytes())
        ours, theirs = (c.find_by_sha256(digest) for c in (collection, local))
        assert ours is not None and theirs is not None
        assert ours.meta == item.meta and ours.source_path == str(item.path.resolve())
        assert ours.original_name == item.name  # the path as indexed (class/file), as a local job stores it
        np.testing.assert_allclose(
            np.frombuffer(ours.vector, "<f4"), np.frombuffer(theirs.vector, "<f4"), atol=1e-5
        )
        # The actors extract the local features too, the same bytes a local job stores.
        assert local_features(collection, ours.id) == local_features(local, theirs.id) is not None
    collection.close()
    local.close()


def local_features(collection: Collection, image_id: int) -> bytes | None:
    with collection.sessions() as session:
        row = session.get(StoredLocalFeatures, image_id)
        return None if row is None else row.data


@pytest.mark.slow
def test_an_interrupted_ray_run_is_rerun_without_duplicates(
    ray_runtime: None, settings: Settings, items: list[SourceItem]
) -> None:
    from app.jobs.ray import index_with_ray

    settings = settings.model_copy(update={"batch_size": 16})
    collection = Collection.open(settings, encoder_from_settings(settings))

    def interrupt(done: int, _added: int) -> None:
        if done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index_with_ray(collection, items, address=None, on_progress=interrupt, setup=register_tiny_backbone)
    collection.close()
    reopened = Collection.open(settings, encoder_from_settings(settings))
    partial, _ = count_rows(reopened)
    assert 0 < partial < IMAGES
    report = index_with_ray(reopened, items, address=None, setup=register_tiny_backbone)
    assert report.added == IMAGES - partial and report.duplicates == partial
    assert count_rows(reopened) == (IMAGES, IMAGES) and reopened.index.ntotal == IMAGES
    reopened.close()

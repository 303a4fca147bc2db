"""kill -9 in the middle of a bulk index — of the job itself, or of the process holding Milvus Lite: after a
restart and a rerun, the store and the database agree exactly and every image is stored once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from app.db.session import make_engine, make_session_factory
from app.db.tables import Image
from index import VectorIndex, build_store
from tests.helpers.images import image_bytes
from tests.helpers.replicas import CBIR, NOT_YET, ROOT, milvus_lite, tiny_env
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

IMAGES = 400


def _pictures(folder: Path) -> Path:
    folder.mkdir()
    for seed in range(IMAGES):
        (folder / f"{seed:04d}.jpg").write_bytes(image_bytes(seed))
    return folder


def _rows(db_url: str) -> tuple[list[int], int, str]:
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            ids = list(session.scalars(select(Image.id).order_by(Image.id)))
            hashes = session.scalar(select(func.count(func.distinct(Image.sha256)))) or 0
            encoder = session.scalar(select(Image.encoder).limit(1)) or ""
    finally:
        engine.dispose()
    return ids, int(hashes), encoder


def _count(db_url: str) -> int:
    try:
        return len(_rows(db_url)[0])
    except Exception:
        return 0


@pytest.mark.parametrize(("store", "victim"), [("faiss", "job"), ("milvus", "job"), ("milvus", "milvus")])
def test_kill_9_during_a_bulk_index_then_rerun_agrees_exactly(
    store: str, victim: str, tmp_path: Path
) -> None:
    folder = _pictures(tmp_path / "pictures")
    data_dir = tmp_path / "data"
    db_url = f"sqlite:///{(data_dir / 'cbir.db').resolve()}"
    with milvus_lite(tmp_path / "milvus") as milvus:
        env = tiny_env(data_dir, CBIR_VECTOR_STORE=store, CBIR_MILVUS_URI=milvus.uri, CBIR_COMMIT_EVERY="8")
        job = subprocess.Popen(
            [*CBIR, "index", str(folder)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(
            lambda: _count(db_url) >= 40 or job.poll() is not None,
            "the job to commit 40 images",
            300,
            ignoring=NOT_YET,
            interval=0.1,
        )
        assert job.poll() is None, "the job finished before it could be killed; raise IMAGES"
        if victim == "job":
            job.kill()
            job.wait()
        else:
            milvus.kill()  # SIGKILL of the process holding Milvus Lite, mid-job
            job.wait(timeout=300)  # the job fails (writes refused) or finishes what it had
            milvus.start()
        killed_at = _count(db_url)
        assert 0 < killed_at < IMAGES

        rerun = subprocess.run(
            [*CBIR, "index", str(folder)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert rerun.returncode == 0, rerun.stderr
        ids, hashes, encoder = _rows(db_url)
        assert len(ids) == hashes == IMAGES  # every image once
        if store == "faiss":
            stored = VectorIndex.load(data_dir / "index.faiss", dim=16, fingerprint=encoder).ids()
        else:
            shared = build_store("milvus", dim=16, fingerprint=encoder, uri=milvus.uri, collection="cbir")
            stored = shared.ids()
        assert np.array_equal(stored, np.array(ids, dtype=np.int64))

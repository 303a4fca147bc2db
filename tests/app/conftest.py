"""Fixtures for the app tests: an app on a temporary data directory with the tiny random backbone."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, make_url

from app.config import Settings
from app.main import create_app

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
COREL = SHARED / "corel1k"


def image_bytes(seed: int, size: tuple[int, int] = (96, 64), fmt: str = "JPEG") -> bytes:
    """A distinct, structured test image: smooth random blobs, so tiny-backbone features differ per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


POSTGRES_URL = os.environ.get("CBIR_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Every test that touches the database runs on SQLite (the default) and on a fresh PostgreSQL one."""
    if request.param == "sqlite":
        yield None
        return
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set CBIR_TEST_POSTGRES_URL (.ci/run installs and starts one)")
    name = f"cbir_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return tiny_settings(tmp_path, database_url)


def tiny_settings(tmp_path: Path, database_url: str | None = None) -> Settings:
    """A collection in tmp_path on the tiny random backbone: fast, and the code path of any encoder."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        backbone="tiny_random",
        head="gap",
        max_side=64,
        batch_size=4,
        commit_every=4,
        workers=2,
        device="cpu",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def corel() -> Path:
    if not COREL.is_dir():
        pytest.fail(f"the Corel-1K dataset is missing at {COREL}; tests need ../shared beside the checkout")
    return COREL

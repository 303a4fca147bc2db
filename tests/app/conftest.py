"""Fixtures for the app tests: an app on a temporary data directory with a test backbone, on each database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers.databases import DATABASES, fresh_database
from tests.helpers.paths import COREL
from tests.helpers.settings import tiny_settings


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Every test that touches the database runs on SQLite (the default) and on a fresh PostgreSQL one."""
    with fresh_database(request.param) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return tiny_settings(tmp_path, database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def corel() -> Path:
    if not COREL.is_dir():
        pytest.fail(f"the Corel-1K dataset is missing at {COREL}; tests need ../shared beside the checkout")
    return COREL

"""Fixtures for the models tests: a tiny encoder and Corel-1K (helpers live in tests/helpers/images.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import Encoder, build_encoder
from tests.helpers.paths import COREL


@pytest.fixture(scope="session")
def tiny_encoder() -> Encoder:
    return build_encoder("tiny_random", "gap", max_side=64, device="cpu")


@pytest.fixture
def corel() -> Path:
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K is not at {COREL}")
    return COREL

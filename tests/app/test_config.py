"""The settings' choices are the registries' names, so a runtime or store added in one file is configurable.

app/config.py writes the runtime and vector-store choices out as Literals: importing the registries would
import torch (models/runtimes) and every store, which `cbir --help` must not pay for. These tests keep the
two lists equal, naming the line to change.
"""

from __future__ import annotations

from typing import get_args

import index
from app.config import Settings
from index.base import available_stores
from models.runtimes import AUTO, available_runtimes


def choices(field: str) -> set[str]:
    return set(get_args(Settings.model_fields[field].annotation))


def test_every_registered_runtime_is_a_runtime_setting() -> None:
    assert choices("runtime") == {AUTO, *available_runtimes()}, "update Settings.runtime in app/config.py"


def test_every_registered_store_is_a_vector_store_setting() -> None:
    assert index  # the package import registers every store
    assert choices("vector_store") == set(available_stores()), "update Settings.vector_store in app/config.py"

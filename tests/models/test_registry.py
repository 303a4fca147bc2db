"""The registry every extension point uses (models/registry.py): one name, one entry; unknown names listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def test_entries_are_found_by_name_and_listed_sorted() -> None:
    registry: Registry[int] = Registry("number")
    registry.register("two")(2)
    registry.add("one", 1)
    assert registry.get("two") == 2
    assert registry.names() == ["one", "two"] == list(registry)
    assert registry.values() == [1, 2]
    assert "one" in registry and "three" not in registry and len(registry) == 2


def test_registration_order_is_kept_when_asked() -> None:
    registry: Registry[int] = Registry("number", sort=False)
    for name in ("zero", "one", "two"):
        registry.add(name, len(registry))
    assert registry.names() == ["zero", "one", "two"]


def test_a_name_is_registered_once() -> None:
    registry: Registry[int] = Registry("number")
    registry.add("one", 1)
    with pytest.raises(ValueError, match="number 'one' is already registered"):
        registry.add("one", 11)
    assert registry.get("one") == 1


def test_an_unknown_name_lists_the_known_ones_in_the_error_asked_for() -> None:
    class Mistake(ValueError):
        pass

    registry: Registry[int] = Registry("number", unknown="no number {name!r}, only {known}", error=Mistake)
    registry.add("one", 1)
    registry.add("two", 2)
    with pytest.raises(Mistake, match="no number 'three', only one, two"):
        registry.get("three")


def test_a_copy_takes_new_entries_without_changing_the_original() -> None:
    registry: Registry[int] = Registry("number")
    registry.add("one", 1)
    twin = registry.copy()
    twin.add("two", 2)
    assert registry.names() == ["one"] and twin.names() == ["one", "two"]


def test_importing_the_registry_does_not_import_torch() -> None:
    probe = "import sys, models.registry, models.defaults; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True
    )
    assert done.stdout.strip() == "False", done.stderr

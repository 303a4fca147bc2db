"""Shared test setup: registers the test backbones (tests/helpers/backbones.py) for every test."""

from __future__ import annotations

import tests.helpers.backbones  # noqa: F401  (registers tiny_random and cell_stats on import)

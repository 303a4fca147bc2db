"""Shared test setup: registers the test backbones (tests/helpers/backbones.py) for every test."""

from __future__ import annotations

import os

import tests.helpers.backbones  # noqa: F401  (registers tiny_random and cell_stats on import)

# The suite's app tests compare vectors exactly and count files in data directories, so they run the torch
# fp32 reference; tests/models/test_runtimes.py and tests/app/test_runtime_service.py test the other
# runtimes and auto explicitly. A CBIR_RUNTIME already set (a CI job for one runtime) is kept.
os.environ.setdefault("CBIR_RUNTIME", "torch")

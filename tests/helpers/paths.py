"""Where the read-only datasets are: ../shared beside the checkout."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
COREL = SHARED / "corel1k"

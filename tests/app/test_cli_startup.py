"""`cbir --help` and the commands that need no model start without importing torch (2 s of imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import config
from models import backbones

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from app.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["images", "--help"], ["images", "list", "--help"], ["keys", "list", "--help"]]
)
def test_help_does_not_import_torch(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert "torch imported: False" in done.stdout, done.stdout + done.stderr


def test_images_list_reads_the_database_without_torch(tmp_path: Path) -> None:
    from app.db import migrate
    from app.db.session import make_engine

    data = tmp_path / "data"
    data.mkdir()
    migrate.upgrade(make_engine(f"sqlite:///{data / 'cbir.db'}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CBIR_DATA_DIR": str(data)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "images", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert "torch imported: False" in done.stdout and "0 of 0 images" in done.stderr, (
        done.stdout + done.stderr
    )


def test_the_default_backbone_is_written_out_right() -> None:
    assert config.DEFAULT_BACKBONE == backbones.DEFAULT_BACKBONE

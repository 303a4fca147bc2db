"""Where an image's file is: the stored copy first, else the indexed source, and what was looked at."""

from __future__ import annotations

from pathlib import Path

from app.files.locate import image_file, looked_at, path_to_read
from app.files.storage import FileStore

DIGEST = "ab" * 32


def test_the_stored_copy_wins_over_the_source(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "images")
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"source")
    stored = files.path_for(DIGEST, "JPEG")
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"copy")
    assert image_file(files, DIGEST, "JPEG", str(source)) == stored
    assert path_to_read(files, DIGEST, "JPEG", str(source)) == stored


def test_without_a_copy_the_source_is_used_and_without_either_none(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "images")
    source = tmp_path / "photo.jpg"
    assert image_file(files, DIGEST, "JPEG", str(source)) is None
    assert looked_at(files, DIGEST, "JPEG", str(source)) == [files.path_for(DIGEST, "JPEG"), source]
    assert path_to_read(files, DIGEST, "JPEG", str(source)) == source  # what a person would check
    source.write_bytes(b"source")
    assert image_file(files, DIGEST, "JPEG", str(source)) == source


def test_an_upload_has_only_its_stored_copy(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "images")
    assert looked_at(files, DIGEST, "PNG", None) == [files.path_for(DIGEST, "PNG")]
    assert image_file(files, DIGEST, "PNG", None) is None
    assert path_to_read(files, DIGEST, "PNG", None) == files.path_for(DIGEST, "PNG")

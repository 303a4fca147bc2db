"""Inputs of the bulk job: directory, glob, CSV and JSON Lines manifests, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.jobs.sources import ManifestError, SourceItem, resolve_source


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "pics"
    (root / "a").mkdir(parents=True)
    for name in ("a/1.jpg", "a/2.png", "3.jpg", ".hidden.jpg"):
        (root / name).write_bytes(b"x")
    return root


def test_a_directory_is_walked_recursively_in_a_stable_order(files: Path) -> None:
    listing = resolve_source(files)
    assert [item.path.relative_to(files).as_posix() for item in listing.items] == [
        "3.jpg",
        "a/1.jpg",
        "a/2.png",
    ]
    assert all(item.meta == {} for item in listing.items) and listing.skipped == []


def test_a_glob_picks_matching_files(files: Path) -> None:
    listing = resolve_source(f"{files}/**/*.jpg")
    assert sorted(item.path.name for item in listing.items) == ["1.jpg", "3.jpg"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        resolve_source(f"{files}/**/*.gif")


def test_a_missing_source_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="a directory, a glob pattern"):
        resolve_source(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no files"):
        resolve_source(tmp_path / "empty")


def test_csv_manifest_paths_are_relative_to_it_and_other_columns_are_metadata(files: Path) -> None:
    manifest = files / "list.csv"
    manifest.write_text('path,sku,title\na/1.jpg,A-17,"red, shoe"\n,B-2,none\n3.jpg,C-3,x,extra\n')
    listing = resolve_source(manifest)
    expected = SourceItem(files / "a/1.jpg", {"sku": "A-17", "title": "red, shoe"}, name="a/1.jpg")
    assert listing.items == [expected], "the path as the manifest wrote it is the path as indexed"
    reasons = [skipped.reason for skipped in listing.skipped]
    assert reasons == ["line 3: empty 'path'", "line 4: more fields than the header's 3"]


def test_csv_manifest_without_the_path_column_is_an_error_naming_its_columns(files: Path) -> None:
    manifest = files / "list.csv"
    manifest.write_text("file,sku\na/1.jpg,A\n")
    with pytest.raises(ManifestError, match=r"no 'path' column \(its header: file, sku\).*--path-column"):
        resolve_source(manifest)
    assert resolve_source(manifest, path_column="file").items[0].meta == {"sku": "A"}


def test_jsonl_manifest_keeps_json_metadata_and_records_bad_lines(files: Path) -> None:
    manifest = files / "list.jsonl"
    lines = [
        json.dumps({"path": str(files / "3.jpg"), "price": 59, "tags": ["x"]}),
        "{not json",
        "[1, 2]",
        json.dumps({"sku": "no path"}),
        "",
    ]
    manifest.write_text("\n".join(lines) + "\n")
    listing = resolve_source(manifest)
    assert listing.items == [SourceItem(files / "3.jpg", {"price": 59, "tags": ["x"]})]
    reasons = [skipped.reason for skipped in listing.skipped]
    assert reasons[0].startswith("line 2: not JSON")
    assert reasons[1:] == ["line 3: a JSON object was expected, got list", "line 4: no 'path' string"]


def test_jsonl_manifest_without_any_path_field_is_an_error(files: Path) -> None:
    manifest = files / "list.ndjson"
    manifest.write_text('{"file": "3.jpg"}\n')
    with pytest.raises(ManifestError, match=r"no 'path' field in any line \(its fields: file\)"):
        resolve_source(manifest)

"""What a bulk job reads: a directory, a glob pattern, or a manifest (CSV or JSON Lines) with metadata.

A manifest names one file per row in a path column (relative paths are relative to the manifest) and every
other column lands in that image's metadata, so a catalogue export (SKU, price, title…) becomes searchable
metadata in one run. Rows that cannot be used are recorded as skipped with their line and reason, like
unreadable files; a manifest without its path column is an error that names the columns it has.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import JobError
from app.files.decoding import Skipped, list_files

MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_GLOB_CHARS = frozenset("*?[")


class ManifestError(JobError):
    """The manifest as a whole cannot be read; the message says what to fix."""

    exit_code = 2  # bad input, as a missing file or folder


@dataclass(frozen=True)
class SourceItem:
    """One file to index and the metadata that goes with it."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the path as indexed (relative to the source); None: the file's name


@dataclass
class Listing:
    items: list[SourceItem]
    skipped: list[Skipped] = field(default_factory=list)  # manifest rows that name no usable file


def is_glob(spec: str) -> bool:
    return any(char in _GLOB_CHARS for char in spec)


def resolve_source(spec: str | Path, *, path_column: str = "path") -> Listing:
    """Files to index from a directory (recursive), a glob (``**`` recurses), a manifest, or one file."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        found = list_files(path)
        if not found:  # most often a wrong path: "added 0" with exit 0 would pass for success
            raise FileNotFoundError(f"{path} holds no files (looked in every sub-folder): check the path")
        return Listing([SourceItem(item, name=item.relative_to(path).as_posix()) for item in found])
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(path, path_column=path_column)
    if path.is_file():
        return Listing([SourceItem(path)])
    if is_glob(text):
        matches = sorted(Path(name) for name in glob.glob(str(path), recursive=True))
        files = [match for match in matches if match.is_file()]
        if not files:
            raise FileNotFoundError(
                f"no file matches {text!r}; quote the pattern so the shell leaves it alone"
            )
        root = _static_prefix(path)
        return Listing([SourceItem(found, name=_relative(found, root)) for found in files])
    raise FileNotFoundError(
        f"{text} does not exist: give a directory, a glob pattern such as 'photos/**/*.jpg', or a manifest "
        f"({', '.join(MANIFEST_SUFFIXES)})"
    )


def _static_prefix(pattern: Path) -> Path:
    """The folder a glob pattern starts from: its parts before the first one with a wildcard."""
    parts: list[str] = []
    for part in pattern.parts:
        if is_glob(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def read_manifest(manifest: Path, *, path_column: str = "path") -> Listing:
    kind = MANIFEST_SUFFIXES.get(manifest.suffix.lower())
    if kind is None:
        raise ManifestError(f"{manifest}: a manifest must end in {', '.join(MANIFEST_SUFFIXES)}")
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            if kind == "csv":
                return _read_csv(manifest, handle, path_column)
            return _read_jsonl(manifest, handle, path_column)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest} is not UTF-8 text ({exc.reason}): save it as UTF-8") from exc


def _item(manifest: Path, raw: str, meta: dict[str, Any]) -> SourceItem:
    path = Path(raw).expanduser()
    if path.is_absolute():
        return SourceItem(path, meta)
    return SourceItem(manifest.parent / path, meta, name=path.as_posix())


def _read_csv(manifest: Path, handle: Any, path_column: str) -> Listing:
    reader = csv.DictReader(handle, restkey="\0extra")
    columns = reader.fieldnames or []
    if path_column not in columns:
        raise ManifestError(
            f"{manifest} has no {path_column!r} column (its header: {', '.join(columns) or 'empty'}): "
            f"name the column of file paths with --path-column, or add a header line"
        )
    listing = Listing([])
    try:
        for row in reader:
            line = reader.line_num
            if "\0extra" in row:
                reason = f"line {line}: more fields than the header's {len(columns)}"
                listing.skipped.append(Skipped(manifest, reason))
                continue
            raw = (row.get(path_column) or "").strip()
            if not raw:
                listing.skipped.append(Skipped(manifest, f"line {line}: empty {path_column!r}"))
                continue
            meta = {key: value for key, value in row.items() if key != path_column and value is not None}
            listing.items.append(_item(manifest, raw, meta))
    except csv.Error as exc:
        raise ManifestError(f"{manifest}, line {reader.line_num}: {exc}") from exc
    return listing


def _read_jsonl(manifest: Path, handle: Any, path_column: str) -> Listing:
    listing = Listing([])
    keys_seen: set[str] = set()
    for line, text in enumerate(handle, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            listing.skipped.append(Skipped(manifest, f"line {line}: not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            reason = f"line {line}: a JSON object was expected, got {type(row).__name__}"
            listing.skipped.append(Skipped(manifest, reason))
            continue
        keys_seen.update(row)
        raw = row.pop(path_column, None)
        if not isinstance(raw, str) or not raw.strip():
            reason = f"line {line}: no {path_column!r} string"
            listing.skipped.append(Skipped(manifest, reason))
            continue
        listing.items.append(_item(manifest, raw.strip(), row))
    if not listing.items and keys_seen and path_column not in keys_seen:
        raise ManifestError(
            f"{manifest} has no {path_column!r} field in any line (its fields: "
            f"{', '.join(sorted(keys_seen))}): name the field of file paths with --path-column"
        )
    return listing

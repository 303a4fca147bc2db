"""Export a collection's rows to JSON Lines or Parquet, and import such a file into another collection.

A record holds what a row holds (id, path, metadata, content hash, size, format, encoder) plus where its
file is, and optionally its vector. An import reads each file (its hash must match the record's), and when
the record's encoder is the target collection's, stores the exported vector instead of re-embedding: the
descriptors are a pure function of the pixels and the encoder, so they would come out the same, at the cost
of a forward pass per image. Otherwise (another encoder, or no vectors exported) the image is embedded.
Parquet needs pyarrow (an optional dependency); JSON Lines needs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from app.collection.catalog import Rows, condition
from app.db import vectors as vectors_codec
from app.db.tables import Image
from app.errors import ApiError, JobError
from app.files.decoding import sha256_of
from app.jobs.records import ImageRecord

if TYPE_CHECKING:
    from app.collection.facade import Collection

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
BATCH = 64


class ExportError(JobError):
    """An export or import file that cannot be written or read."""


def _format_of(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ExportError(f"{path}: name the file .jsonl or .parquet")
    if kind == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ExportError("Parquet needs pyarrow: `pip install pyarrow`, or write .jsonl") from exc
    return kind


def records(
    rows: Rows,
    file_of: Callable[[Image], str | None],
    *,
    vectors: bool = False,
    spec: dict[str, Any] | None = None,
    path_prefix: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The records of the matching rows, in id order, a batch of 512 rows at a time."""
    matching = condition(rows, spec, path_prefix)
    last = 0
    while True:
        with rows.sessions() as session:
            batch = list(
                session.scalars(select(Image).where(matching, Image.id > last).order_by(Image.id).limit(512))
            )
        if not batch:
            return
        for row in batch:
            record: dict[str, Any] = {
                "id": row.id,
                "path": row.original_name,
                "sha256": row.sha256,
                "width": row.width,
                "height": row.height,
                "format": row.format,
                "size_bytes": row.size_bytes,
                "created_at": row.created_at.isoformat(),
                "metadata": row.meta or {},
                "encoder": row.encoder,
                "file": file_of(row),
            }
            if vectors:
                record["vector"] = vectors_codec.decode(row.vector).tolist()
            yield record
        last = batch[-1].id


def write(out: Path, items: Iterable[dict[str, Any]]) -> int:
    """Write the records to ``out`` (.jsonl or .parquet) through a temporary file; returns how many."""
    kind = _format_of(out)
    partial = out.with_name(out.name + ".partial")
    count = 0
    if kind == "jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item) + "\n")
                count += 1
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [{**item, "metadata": json.dumps(item["metadata"])} for item in items]
        count = len(rows)
        pq.write_table(pa.Table.from_pylist(rows), partial)
    partial.replace(out)
    return count


def read(source: Path) -> Iterator[dict[str, Any]]:
    kind = _format_of(source)
    if kind == "parquet":
        import pyarrow.parquet as pq

        for item in pq.read_table(source).to_pylist():
            yield {**item, "metadata": json.loads(item.get("metadata") or "{}")}
        return
    with source.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, 1):
            if text.strip():
                try:
                    yield json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ExportError(f"{source}, line {line}: not JSON ({exc.msg})") from exc


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    reused_vectors: int = 0
    embedded: int = 0
    skipped: list[str] = field(default_factory=list)


def import_records(collection: Collection, source: Path) -> ImportReport:
    """Add the records of ``source`` to the collection, reusing vectors made by its encoder."""

    report = ImportReport()
    fingerprint = collection.encoder.fingerprint
    reuse: list[tuple[ImageRecord, np.ndarray]] = []
    embed: list[Any] = []

    def flush() -> None:
        if reuse:
            added, dupes = collection.ingest_many(
                [item for item, _ in reuse], np.stack([v for _, v in reuse]), made_by=fingerprint
            )
            report.added, report.duplicates = report.added + added, report.duplicates + dupes
            report.reused_vectors += added
            reuse.clear()
        if embed:
            vectors = collection.embed_prepared(embed)
            added, dupes = collection.ingest_many(embed, vectors, made_by=fingerprint)
            report.added, report.duplicates = report.added + added, report.duplicates + dupes
            report.embedded += added
            embed.clear()

    for number, record in enumerate(read(source), 1):
        where = f"record {number} (id {record.get('id')})"
        file = record.get("file")
        path = Path(file) if file else None
        if path is not None and not path.is_absolute():
            path = source.parent / path
        if path is None or not path.is_file():
            report.skipped.append(f"{where}: its file {file!r} is missing")
            continue
        data = path.read_bytes()
        if sha256_of(data) != record.get("sha256"):
            report.skipped.append(f"{where}: {path} does not hold the exported content (SHA-256 differs)")
            continue
        name = str(record.get("path") or path.name)
        meta = record.get("metadata") or {}
        vector = record.get("vector")
        if (
            vector is not None
            and record.get("encoder") == fingerprint
            and len(vector) == collection.encoder.dim
        ):
            item = ImageRecord(
                record["sha256"],
                data,
                int(record["width"]),
                int(record["height"]),
                str(record["format"]),
                name,
                meta=meta,
            )
            reuse.append((item, np.asarray(vector, dtype=np.float32)))
        else:
            try:
                embed.append(collection.prepare_upload(data, name, meta))
            except ApiError as exc:
                report.skipped.append(f"{where}: {exc.detail}")
                continue
        if len(reuse) + len(embed) >= BATCH:
            flush()
    flush()
    collection.save_index()
    return report

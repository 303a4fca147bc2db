"""`cbir images …`: list, show, edit, delete, export and import the collection's images from a shell.

list, show, update and export read and write the database only, so they start without loading a model
(torch); delete and import open the collection, because the vector index must follow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.exits import SKIPPED
from app.cli.opening import open_collection
from app.cli.options import DATABASE, command, group
from app.cli.render import capped, console, err_console, figures_table, json_line, rows_table
from app.collection import catalog
from app.collection.filters import parse_filter
from app.collection.rows import open_rows, with_ids
from app.config import Settings
from app.errors import JobError
from app.schemas import ImageOut

images_app = group("Browse and manage the collection's images.")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (one object per line) for scripts.")]
FilterOption = Annotated[
    str | None,
    typer.Option("--filter", help='JSON filter, e.g. \'{"sku": "A-17", "price": {"$gte": 10}}\'.'),
]
PrefixOption = Annotated[str | None, typer.Option("--path-prefix", help="Only paths starting with this.")]
ImageId = Annotated[int, typer.Argument(help="The image's id.")]


def as_dict(row: Any) -> dict[str, Any]:
    return ImageOut.from_row(row).model_dump(mode="json")


@command(images_app, DATABASE, name="list")
def images_list(
    settings: Settings,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Images per page.")] = 50,
    after: Annotated[int | None, typer.Option(help="Start after this id (a page's `next`).")] = None,
    newest: Annotated[bool, typer.Option("--newest", help="Newest first.")] = False,
    every: Annotated[bool, typer.Option("--all", help="Follow the pages to the end.")] = False,
    filter_: FilterOption = None,
    path_prefix: PrefixOption = None,
    as_json: AsJson = False,
) -> None:
    """Images page by page (oldest first); --json prints one image per line."""
    rows = open_rows(settings)
    spec = parse_filter(filter_)
    table: list[list[str]] = []
    shown = 0
    while True:
        page = catalog.list_page(
            rows,
            limit=limit,
            after=after,
            order="desc" if newest else "asc",
            spec=spec,
            path_prefix=path_prefix,
        )
        for row in page.images:
            shown += 1
            if as_json:
                json_line(as_dict(row))
                continue
            size, created = f"{row.width}x{row.height}", f"{row.created_at:%Y-%m-%d %H:%M}"
            table.append([str(row.id), row.original_name, size, row.format, created, json.dumps(row.meta)])
        if not every or page.next is None:
            break
        after = int(page.next)
    if not as_json:
        rows_table(("id", "path", "size", "format", "created", "metadata"), table)
    more = f"; next page: --after {page.next}" if page.next and not every else ""
    err_console.print(f"{shown} of {page.total} images{more}")


@command(images_app, DATABASE, name="show")
def images_show(settings: Settings, image_id: ImageId, as_json: AsJson = False) -> None:
    """One image: path, size, metadata, URLs."""
    fields = as_dict(catalog.get_row(open_rows(settings), image_id))
    if as_json:
        json_line(fields)
        return
    figures_table(fields)


def parsed_value(text: str) -> Any:
    """--set values are JSON when they parse (12, true, ["a"]), text otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@command(images_app, DATABASE, name="update")
def images_update(
    settings: Settings,
    image_id: ImageId,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE (VALUE as JSON when it parses); repeatable.")
    ] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove KEY; repeatable.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON merge patch (null removes a key).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the metadata instead.")] = False,
    as_json: AsJson = False,
) -> None:
    """Edit an image's metadata (merged into what it has, unless --replace)."""
    patch: dict[str, Any] = dict(parse_filter(metadata, "--metadata") or {})
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise JobError(f"--set takes KEY=VALUE, got {item!r}")
        patch[key] = parsed_value(value)
    for key in unset or []:
        patch[key] = None
    if not patch and not replace:
        raise JobError("nothing to change: give --set KEY=VALUE, --unset KEY or --metadata JSON")
    row = catalog.patch_metadata(open_rows(settings), image_id, patch, replace=replace)
    json_line(as_dict(row) if as_json else row.meta)


@command(images_app, DATABASE, name="delete")
def images_delete(
    settings: Settings,
    ids: Annotated[list[int] | None, typer.Argument(help="Ids to delete.")] = None,
    filter_: FilterOption = None,
    path_prefix: PrefixOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm a delete by --filter or --path-prefix.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Delete images by id, by --filter or by --path-prefix (one of them), in one transaction."""
    from app.files.thumbnails import Thumbnails

    given = [
        name for name, value in (("ids", ids), ("--filter", filter_), ("--path-prefix", path_prefix)) if value
    ]
    if len(given) != 1:
        raise JobError("give exactly one of: ids, --filter or --path-prefix")
    spec = parse_filter(filter_)
    if ids:
        condition = with_ids(ids)
    else:
        rows = open_rows(settings)
        matching = len(catalog.matching_ids(rows, spec, path_prefix))
        if not yes:
            raise JobError(f"this would delete {matching} images: add --yes to go ahead")
        condition = catalog.condition(rows, spec, path_prefix)
    collection = open_collection(settings, existing=True)
    try:
        deleted = collection.delete_where(condition)
    finally:
        collection.close()
    thumbnails = Thumbnails.for_settings(settings)
    for row in deleted:
        thumbnails.drop(row.sha256)
    if as_json:
        json_line({"deleted": len(deleted), "ids": [row.id for row in deleted]})
    else:
        console.print(f"deleted {len(deleted)} images")


@command(images_app, DATABASE, name="export")
def images_export(
    settings: Settings,
    out: Annotated[Path, typer.Argument(help="OUT.jsonl, or OUT.parquet (needs pyarrow).")],
    vectors: Annotated[
        bool, typer.Option("--vectors", help="Include the vectors (import then skips embedding).")
    ] = False,
    filter_: FilterOption = None,
    path_prefix: PrefixOption = None,
) -> None:
    """Write id, path, metadata, file location (and optionally the vector) of every image."""
    from app.files.locate import image_file
    from app.files.storage import FileStore
    from app.jobs import export

    files = FileStore(settings.images_dir)

    def file_of(row: Any) -> str | None:
        found = image_file(files, row.sha256, row.format, row.source_path)
        return str(found.resolve()) if found is not None else row.source_path

    records = export.records(
        open_rows(settings), file_of, vectors=vectors, spec=parse_filter(filter_), path_prefix=path_prefix
    )
    count = export.write(out, records)
    err_console.print(f"exported {count} images to {out}")


@command(images_app, DATABASE, name="import")
def images_import(
    settings: Settings,
    source: Annotated[Path, typer.Argument(help="A file written by `cbir images export`.", exists=True)],
    as_json: AsJson = False,
) -> None:
    """Add the exported images to this collection; vectors of this collection's encoder are reused."""
    from app.jobs import export

    collection = open_collection(settings)
    try:
        report = export.import_records(collection, source)
    finally:
        collection.close()
    if as_json:
        json_line(
            {
                "added": report.added,
                "duplicates": report.duplicates,
                "reused_vectors": report.reused_vectors,
                "embedded": report.embedded,
                "skipped": report.skipped,
            }
        )
    else:
        console.print(
            f"added {report.added} ({report.reused_vectors} with their exported vectors, "
            f"{report.embedded} embedded), {report.duplicates} already stored, "
            f"{len(report.skipped)} skipped"
        )
        capped([f"skipped {reason}" for reason in report.skipped], to_stderr=True)
    if report.skipped:
        raise typer.Exit(SKIPPED)

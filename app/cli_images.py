"""`cbir images …`: list, show, edit, delete, export and import the collection's images from a shell.

list, show, update and export read and write the database only, so they start without loading a model
(torch); delete and import open the collection, because the vector index must follow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import ColumnElement

from app.cli import AsJson, DatabaseUrl, DataDir, console, err_console, friendly_errors, make_settings
from app.collection import catalog
from app.collection.filters import parse_filter
from app.config import Settings
from app.errors import InvalidRequestError
from app.schemas import ImageOut

images_app = typer.Typer(
    help="Browse and manage the collection's images.", no_args_is_help=True, rich_markup_mode=None
)
FilterOption = Annotated[
    str | None,
    typer.Option("--filter", help='JSON filter, e.g. \'{"sku": "A-17", "price": {"$gte": 10}}\'.'),
]
PrefixOption = Annotated[str | None, typer.Option("--path-prefix", help="Only paths starting with this.")]


def _rows(settings: Settings) -> catalog.RowStore:
    from app.collection.presence import require_collection
    from app.db import migrate
    from app.db.session import open_database

    require_collection(settings)
    db = open_database(settings.db_url, upgrade=False)
    engine = db.engine
    missing = migrate.pending(engine)
    if missing:
        raise InvalidRequestError(f"the database needs migrations {missing}: run `cbir db upgrade`")
    return catalog.RowStore(engine, db.sessions)


def _as_dict(row: Any) -> dict[str, Any]:
    return ImageOut.from_row(row).model_dump(mode="json")


@images_app.command("list")
def images_list(
    limit: Annotated[int, typer.Option(min=1, max=500, help="Images per page.")] = 50,
    after: Annotated[int | None, typer.Option(help="Start after this id (a page's `next`).")] = None,
    newest: Annotated[bool, typer.Option("--newest", help="Newest first.")] = False,
    every: Annotated[bool, typer.Option("--all", help="Follow the pages to the end.")] = False,
    filter_: FilterOption = None,
    path_prefix: PrefixOption = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Images page by page (oldest first); --json prints one image per line."""
    with friendly_errors():
        rows = _rows(make_settings(locals()))
        spec = parse_filter(filter_)
        table = Table()
        for column in ("id", "path", "size", "format", "created", "metadata"):
            table.add_column(column)
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
                    print(json.dumps(_as_dict(row)))
                else:
                    size = f"{row.width}x{row.height}"
                    created = f"{row.created_at:%Y-%m-%d %H:%M}"
                    table.add_row(
                        str(row.id), row.original_name, size, row.format, created, json.dumps(row.meta)
                    )
            if not every or page.next is None:
                break
            after = int(page.next)
        if not as_json:
            console.print(table)
        more = f"; next page: --after {page.next}" if page.next and not every else ""
        err_console.print(f"{shown} of {page.total} images{more}")


@images_app.command("show")
def images_show(
    image_id: Annotated[int, typer.Argument(help="The image's id.")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """One image: path, size, metadata, URLs."""
    with friendly_errors():
        fields = _as_dict(catalog.get_row(_rows(make_settings(locals())), image_id))
        if as_json:
            print(json.dumps(fields))
            return
        table = Table(show_header=False)
        for key, value in fields.items():
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
        console.print(table)


def _value(text: str) -> Any:
    """--set values are JSON when they parse (12, true, ["a"]), text otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@images_app.command("update")
def images_update(
    image_id: Annotated[int, typer.Argument(help="The image's id.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE (VALUE as JSON when it parses); repeatable.")
    ] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove KEY; repeatable.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON merge patch (null removes a key).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the metadata instead.")] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Edit an image's metadata (merged into what it has, unless --replace)."""
    with friendly_errors():
        patch: dict[str, Any] = dict(parse_filter(metadata, "--metadata") or {})
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidRequestError(f"--set takes KEY=VALUE, got {item!r}")
            patch[key] = _value(value)
        for key in unset or []:
            patch[key] = None
        if not patch and not replace:
            raise InvalidRequestError(
                "nothing to change: give --set KEY=VALUE, --unset KEY or --metadata JSON"
            )
        row = catalog.patch_metadata(_rows(make_settings(locals())), image_id, patch, replace=replace)
        print(json.dumps(_as_dict(row) if as_json else row.meta))


@images_app.command("delete")
def images_delete(
    ids: Annotated[list[int] | None, typer.Argument(help="Ids to delete.")] = None,
    filter_: FilterOption = None,
    path_prefix: PrefixOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm a delete by --filter or --path-prefix.")
    ] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete images by id, by --filter or by --path-prefix (one of them), in one transaction."""
    from app.cli import open_collection
    from app.db.tables import Image
    from app.files.thumbnails import Thumbnails

    with friendly_errors():
        settings = make_settings(locals())
        given = [
            name
            for name, value in (("ids", ids), ("--filter", filter_), ("--path-prefix", path_prefix))
            if value
        ]
        if len(given) != 1:
            raise InvalidRequestError("give exactly one of: ids, --filter or --path-prefix")
        spec = parse_filter(filter_)
        condition: ColumnElement[bool]
        if ids:
            condition = Image.id.in_(ids)
        else:
            rows = _rows(settings)
            matching = len(catalog.matching_ids(rows, spec, path_prefix))
            if not yes:
                raise InvalidRequestError(f"this would delete {matching} images: add --yes to go ahead")
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
            print(json.dumps({"deleted": len(deleted), "ids": [row.id for row in deleted]}))
        else:
            console.print(f"deleted {len(deleted)} images")


@images_app.command("export")
def images_export(
    out: Annotated[Path, typer.Argument(help="OUT.jsonl, or OUT.parquet (needs pyarrow).")],
    vectors: Annotated[
        bool, typer.Option("--vectors", help="Include the vectors (import then skips embedding).")
    ] = False,
    filter_: FilterOption = None,
    path_prefix: PrefixOption = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write id, path, metadata, file location (and optionally the vector) of every image."""
    from app.files.locate import image_file
    from app.files.storage import FileStore
    from app.jobs import export

    with friendly_errors():
        settings = make_settings(locals())
        files = FileStore(settings.images_dir)

        def file_of(row: Any) -> str | None:
            found = image_file(files, row.sha256, row.format, row.source_path)
            return str(found.resolve()) if found is not None else row.source_path

        rows = _rows(settings)
        count = export.write(
            out,
            export.records(
                rows, file_of, vectors=vectors, spec=parse_filter(filter_), path_prefix=path_prefix
            ),
        )
        err_console.print(f"exported {count} images to {out}")


@images_app.command("import")
def images_import(
    source: Annotated[Path, typer.Argument(help="A file written by `cbir images export`.", exists=True)],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add the exported images to this collection; vectors of this collection's encoder are reused."""
    from app.cli import open_collection
    from app.jobs import export

    with friendly_errors():
        collection = open_collection(make_settings(locals()))
        try:
            report = export.import_records(collection, source)
        finally:
            collection.close()
        summary = {
            "added": report.added,
            "duplicates": report.duplicates,
            "reused_vectors": report.reused_vectors,
            "embedded": report.embedded,
            "skipped": report.skipped,
        }
        if as_json:
            print(json.dumps(summary))
        else:
            console.print(
                f"added {report.added} ({report.reused_vectors} with their exported vectors, "
                f"{report.embedded} embedded), {report.duplicates} already stored, "
                f"{len(report.skipped)} skipped"
            )
            for reason in report.skipped[:20]:
                err_console.print(f"  skipped {reason}")
        if report.skipped:
            raise typer.Exit(3)

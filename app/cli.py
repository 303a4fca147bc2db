"""The `cbir` command: serve the API, index folders, search, evaluate and maintain a collection.

Every command reads the same settings as the service (environment, prefix CBIR_) and takes the common ones
as flags too. Errors print one line that says what is wrong and what to do, and exit non-zero.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from app.config import Settings
from app.errors import CbirError
from app.services import bulk
from app.services.collection import Collection
from app.services.evaluation import evaluate_folder
from app.services.keys import Role, create_key, list_keys, revoke_key
from index import VectorIndexError
from models import EncoderConfigError

app = typer.Typer(
    help="Content-based image retrieval: index a collection and find similar images.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory [env CBIR_DATA_DIR; ./data].")
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL [env CBIR_DATABASE_URL].")
]
Backbone = Annotated[
    str | None, typer.Option("--backbone", help="Backbone [env CBIR_BACKBONE; tf_efficientnet_lite0].")
]
Head = Annotated[str | None, typer.Option("--head", help="Pooling head: gap, gem, mac [env CBIR_HEAD; gap].")]
Weights = Annotated[Path | None, typer.Option("--weights", help="Backbone weights file [env CBIR_WEIGHTS].")]
MaxSide = Annotated[int | None, typer.Option("--max-side", help="Resize images to this long side [320].")]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="Images per forward pass [4 on CPU, 32 on CUDA].")
]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto].")]
Workers = Annotated[int | None, typer.Option("--workers", help="Threads decoding images [2].")]


def make_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the environment, with the flags the user gave taking precedence.

    Commands pass their ``locals()``: every parameter named like a setting and given a value overrides it.
    """
    given = {key: value for key, value in flags.items() if key in Settings.model_fields and value is not None}
    return Settings(**given)


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except (CbirError, EncoderConfigError, VectorIndexError) as exc:
        err_console.print(f"[bold red]error:[/] {getattr(exc, 'detail', None) or exc}")
        raise typer.Exit(1) from exc
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc


class RateColumn(ProgressColumn):
    """Images per second over the whole run (rich's own speed column only shows bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        images = task.fields.get("images", 0)
        rate = images / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.1f} img/s", style="progress.data.speed")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total, images=0)

        def update(done: int, images: int) -> None:
            progress.update(task, completed=done, images=images)

        yield update


def open_collection(settings: Settings, **kwargs: Any) -> Collection:
    from app.encoders import encoder_from_settings

    return Collection.open(settings, encoder_from_settings(settings), **kwargs)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    device: Device = None,
) -> None:
    """Start the REST API (applies pending database migrations first). OpenAPI docs at /docs."""
    import uvicorn

    from app.main import create_app

    with friendly_errors():
        settings = make_settings(locals())
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        )


@app.command("index")
def index_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder of images, walked recursively.")],
    copy: Annotated[
        bool, typer.Option("--copy/--no-copy", help="Copy files into the data directory, or reference them.")
    ] = True,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
    commit_every: Annotated[int | None, typer.Option(help="Save the index every N images.")] = None,
) -> None:
    """Add every image under DIRECTORY to the collection; skips (and counts) duplicates and non-images."""
    with friendly_errors():
        settings = make_settings(locals())
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
        collection = open_collection(settings)
        paths = bulk.list_files(directory)
        with progress_bar("indexing", len(paths)) as update:
            report = bulk.index_files(collection, paths, copy_files=copy, on_progress=update)
        collection.close()
        console.print(
            f"added {report.added}, duplicates {report.duplicates}, skipped {len(report.skipped)} "
            f"(not images or unreadable), {report.images_per_second:.1f} img/s; "
            f"collection now holds {collection.index.ntotal} images"
        )
        for skipped in report.skipped[:20]:
            console.print(f"  skipped {skipped.path}: {skipped.reason}", highlight=False)
        if len(report.skipped) > 20:
            console.print(f"  … and {len(report.skipped) - 20} more")


@app.command()
def search(
    image: Annotated[Path, typer.Argument(help="The query image.", exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="How many results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    device: Device = None,
) -> None:
    """Find the K images of the collection most similar to IMAGE."""
    with friendly_errors():
        settings = make_settings(locals())
        collection = open_collection(settings)
        hits = collection.search_image(image.read_bytes(), k)
        collection.close()
        if as_json:
            rows = [
                {"id": h.image.id, "score": round(h.score, 6), "name": h.image.original_name} for h in hits
            ]
            console.print_json(json.dumps(rows))
            return
        table = Table(title=f"{len(hits)} most similar to {image.name}")
        for column in ("rank", "id", "score", "name", "metadata"):
            table.add_column(column, justify="right" if column in ("rank", "id", "score") else "left")
        for rank, hit in enumerate(hits, 1):
            table.add_row(
                str(rank),
                str(hit.image.id),
                f"{hit.score:.4f}",
                hit.image.original_name,
                json.dumps(hit.image.meta),
            )
        console.print(table)


@app.command()
def stats(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    device: Device = None,
) -> None:
    """Size, dimension, encoder and index type of the collection."""
    with friendly_errors():
        settings = make_settings(locals())
        collection = open_collection(settings)
        figures = collection.stats()
        collection.close()
        table = Table(show_header=False)
        for key, value in figures.items():
            table.add_row(key, str(value))
        console.print(table)


@app.command()
def evaluate(
    directory: Annotated[Path, typer.Argument(help="A folder with one sub-folder of images per class.")],
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Retrieval quality of the configured encoder: every image queries all the others (same class =
    relevant). Prints mAP and P@1/5/10, then a last line of JSON with the figures."""
    with friendly_errors():
        settings = make_settings(locals())
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
        from app.encoders import encoder_from_settings

        encoder = encoder_from_settings(settings)
        total = sum(1 for _ in bulk.list_files(directory))
        with progress_bar("embedding", total) as update:
            report = evaluate_folder(
                encoder,
                directory,
                workers=settings.workers,
                max_pixels=settings.max_pixels,
                on_progress=update,
            )
        figures = {"encoder": encoder.fingerprint, **report.as_dict()}
        table = Table(title=f"{directory} — {report.images} images, {report.classes} classes")
        for key in ("mAP", "P@1", "P@5", "P@10", "img_s"):
            table.add_column(key, justify="right")
        table.add_row(*(f"{figures[key]}" for key in ("mAP", "P@1", "P@5", "P@10", "img_s")))
        console.print(table)
        if report.skipped:
            console.print(f"skipped {len(report.skipped)} unreadable files")
        print(json.dumps(figures))


@app.command()
def reindex(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    batch_size: BatchSize = None,
    device: Device = None,
) -> None:
    """Re-embed the stored images with the configured encoder and rebuild the index (resumable)."""
    with friendly_errors():
        settings = make_settings(locals())
        collection = open_collection(settings, reindexing=True)
        with progress_bar("re-embedding", collection.count()) as update:
            report = bulk.reembed(collection, on_progress=update)
        collection.reconcile()
        collection.save_index()
        collection.close()
        console.print(
            f"re-embedded {report.added} images with {collection.encoder.fingerprint}; "
            f"{len(report.skipped)} could not be read; index holds {collection.index.ntotal}"
        )
        for skipped in report.skipped[:20]:
            console.print(f"  {skipped.path}: {skipped.reason}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply pending migrations to the database."""
    from app.db import migrate
    from app.db.session import make_engine

    with friendly_errors():
        settings = make_settings(locals())
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        todo = migrate.pending(engine)
        migrate.upgrade(engine)
        engine.dispose()
        console.print(f"database at {settings.db_url}: applied {len(todo)} migration(s) {todo}; now at head")


keys_app = typer.Typer(help="API keys: once one exists, writes need a write key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _key_sessions(data_dir: Path | None, database_url: str | None) -> Any:
    from app.db import migrate
    from app.db.session import make_engine, make_session_factory

    settings = make_settings(locals())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    return make_session_factory(engine)


@keys_app.command("create")
def keys_create(
    role: Annotated[
        Role, typer.Option(help="read: search and get; write: also add and delete; admin: everything.")
    ],
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    with friendly_errors():
        new = create_key(_key_sessions(data_dir, database_url), name or f"{role} key", role)
        err_console.print(
            f"created key {new.row.id} ({new.row.role}, {new.row.name!r}); store it now, not shown again:",
        )
        print(new.secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Keys with their role and state (never the secret)."""
    with friendly_errors():
        table = Table()
        for column in ("id", "name", "role", "prefix", "created", "revoked"):
            table.add_column(column)
        for row in list_keys(_key_sessions(data_dir, database_url)):
            revoked = f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
            table.add_row(
                str(row.id), row.name, row.role, row.prefix + "…", f"{row.created_at:%Y-%m-%d %H:%M}", revoked
            )
        console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `cbir keys list`).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    with friendly_errors():
        row = revoke_key(_key_sessions(data_dir, database_url), key_id)
        if row is None:
            raise ValueError(f"no key with id {key_id}; see `cbir keys list`")
        console.print(f"key {row.id} ({row.name!r}) is revoked")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

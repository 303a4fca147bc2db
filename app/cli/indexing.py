"""`cbir index`, `cbir reindex` and `cbir index-build`: filling the collection, switching its encoder, and
rebuilding its vector index from the stored vectors."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.exits import SKIPPED, STOPPED
from app.cli.opening import open_collection
from app.cli.options import DATABASE, ENCODER, READING, command
from app.cli.progress import file_progress, index_progress, progress_bar, stop_on_signals
from app.cli.render import capped, console, err_console
from app.config import Settings
from index.factory import AUTO as AUTO_INDEX
from index.factory import MIN_TRAIN_VECTORS
from index.faiss.types import index_type as registered_index_type

commands = typer.Typer()


@command(commands, DATABASE, ENCODER, READING, "commit_every", "gpu_decode", "compile", name="index")
def index_cmd(
    settings: Settings,
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Folders (walked recursively), glob patterns ('photos/**/*.jpg', quoted, or expanded by the "
            "shell), files, or manifests: CSV or JSON Lines (.csv, .jsonl) with a path column; its other "
            "columns become metadata. Several may be given.",
            show_default=False,
        ),
    ],
    copy: Annotated[
        bool, typer.Option("--copy/--no-copy", help="Copy files into the data directory, or reference them.")
    ] = True,
    path_column: Annotated[str, typer.Option(help="The manifest's column of file paths.")] = "path",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Embed on a Ray cluster: its address (auto, HOST:6379, ray://HOST:10001), or 'local' to "
            "start Ray here. Needs Ray Data: the ray extra of cbir (README, A Ray cluster).",
        ),
    ] = None,
    ray_actors: Annotated[
        int | None, typer.Option(help="--ray: encoder actors (default one per GPU, else per CPU).", min=1)
    ] = None,
    progress_every: Annotated[
        float, typer.Option(help="Away from a terminal: seconds between progress lines.", min=0)
    ] = 10.0,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 3 when files were skipped (for scripts).")
    ] = False,
) -> None:
    """Add every image of the SOURCES to the collection; skips (and counts) duplicates and non-images.

    SIGTERM or Ctrl-C: the batch in flight is committed, the summary printed, and the exit status is 130."""
    from app.jobs import bulk
    from app.jobs.sources import Listing, resolve_source

    with stop_on_signals() as stop:
        listing = Listing([])
        for source in sources:
            part = resolve_source(source, path_column=path_column)
            listing.items.extend(part.items)
            listing.skipped.extend(part.skipped)
        collection = open_collection(settings)
        with index_progress("indexing", len(listing.items), progress_every) as update:
            if ray_address is not None:
                from app.jobs.ray import index_with_ray

                report = index_with_ray(
                    collection,
                    listing.items,
                    address=ray_address,
                    copy_files=copy,
                    on_progress=update,
                    skipped=listing.skipped,
                    actors=ray_actors,
                )
            else:
                report = bulk.index_files(
                    collection,
                    listing.items,
                    copy_files=copy,
                    on_progress=update,
                    skipped=listing.skipped,
                    stop=stop,
                )
        collection.close()
        console.print(
            f"added {report.added}, duplicates {report.duplicates}, skipped {len(report.skipped)} "
            f"(not images or unreadable), {report.images_per_second:.1f} img/s; "
            f"collection now holds {collection.index.ntotal} images"
        )
        capped([f"skipped {skipped.path}: {skipped.reason}" for skipped in report.skipped])
        if report.stopped:
            err_console.print("stopped by a signal after committing the batch in flight: run again to go on")
            raise typer.Exit(STOPPED)
        if strict and report.skipped:
            raise typer.Exit(SKIPPED)


@command(commands, DATABASE, ENCODER, "batch_size")
def reindex(settings: Settings) -> None:
    """Switch the collection to the configured encoder: re-embed the stored images beside the current index,
    then swap in one transaction; a running service keeps answering and follows. Resumable."""
    from app.jobs.reindex import reindex_collection, stored_count

    with progress_bar("re-embedding", stored_count(settings)) as update:
        report = reindex_collection(settings, on_progress=update)
    reused = f" ({report.reused} staged by an earlier run)" if report.reused else ""
    console.print(
        f"re-embedded {report.embedded} images{reused} with {report.fingerprint}; "
        f"switched from {report.previous or 'no recorded encoder'}; index holds {report.indexed}"
    )


@command(commands, "index_type", "index_memory_mb", DATABASE, name="index-build")
def index_build(settings: Settings) -> None:
    """Rebuild the vector index from the vectors stored in the database, without re-embedding: picks the
    type, trains it on a sample, swaps the file atomically. A running service picks the new file up."""
    from app.jobs.index_build import rebuild_index

    with file_progress("building index") as update:
        report = rebuild_index(settings, on_progress=update)
    console.print(
        f"built {report.description} with {report.count} vectors in {report.seconds:.1f} s "
        f"(was {report.previous or 'no index'}); saved to {report.path}"
    )
    asked = settings.index_type
    trains = asked != AUTO_INDEX and registered_index_type(asked).needs_training
    if trains and report.spec.type == "flat":
        console.print(
            f"{asked} needs at least {MIN_TRAIN_VECTORS} vectors to train on: below that the exact flat "
            "index is built (and is fast at this size); run index-build again as the collection grows"
        )

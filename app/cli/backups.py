"""`cbir backup` and `cbir restore`: the collection copied as of one moment, and put back, file by file
checked against its recorded hash. They load no model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.options import DATABASE, command
from app.cli.progress import file_progress
from app.cli.render import console, warn_missing_files
from app.config import Settings

commands = typer.Typer()


@command(commands, DATABASE)
def backup(
    settings: Settings,
    destination: Annotated[Path, typer.Argument(help="A new (or empty) folder to write the backup to.")],
) -> None:
    """Copy the collection (database, index, image files) to DESTINATION; safe while the service or a bulk
    index runs: the copy is the collection as of one moment. Loads no model."""
    from app.jobs.backup import backup as run_backup

    with file_progress("backing up") as update:
        report = run_backup(settings, destination, on_progress=update)
    console.print(
        f"backed up {report.images} images ({report.files} files, {report.bytes / 1e6:,.1f} MB) to "
        f"{report.destination} in {report.seconds:.1f} s; index {report.index}",
        highlight=False,
    )
    if report.deleted_during_backup:
        console.print(f"{report.deleted_during_backup} images deleted while it ran are not in the backup")
    warn_missing_files(report.missing)


@command(commands, "data_dir")
def restore(
    settings: Settings,
    source: Annotated[Path, typer.Argument(help="A folder written by `cbir backup`.")],
) -> None:
    """Restore the backup in SOURCE into a new (or empty) data directory (--data-dir), checking every file
    against its recorded hash; then `cbir serve --data-dir` the same folder."""
    from app.jobs.backup import restore as run_restore

    with file_progress("restoring") as update:
        report = run_restore(source, settings, on_progress=update)
    console.print(
        f"restored {report.images} images ({report.files} files, {report.bytes / 1e6:,.1f} MB) from the "
        f"backup of {report.created_at} into {report.data_dir} in {report.seconds:.1f} s",
        highlight=False,
    )
    warn_missing_files(report.missing)

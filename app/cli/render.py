"""What the commands print: results on stdout (tables for people, JSON for scripts), the rest on stderr.

The shapes recur across commands (a two-column table of figures, a table of rows, a capped list of what
was skipped, the line that says how to use a fitted file), so each is written once here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SHOWN = 20  # items of a list (skipped files, missing files) printed before "… and N more"


def json_line(value: Any) -> None:
    """One JSON value on one line of stdout (``print``: no rich markup, no wrapping)."""
    print(json.dumps(value, default=str))


def figures_table(figures: Mapping[str, Any]) -> None:
    """A headerless two-column table: name, value."""
    table = Table(show_header=False)
    for key, value in figures.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)


def rows_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    title: str | None = None,
    right: Iterable[str] = (),
) -> None:
    """A table with a header; the columns named in ``right`` are right-aligned (numbers)."""
    aligned = set(right)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in aligned else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def metrics_table(figures: Mapping[str, Any], columns: Sequence[str], title: str) -> None:
    """One row of retrieval figures; a figure the run could not measure (too few answers) shows n/a."""
    rows_table(columns, [[f"{figures.get(key, 'n/a')}" for key in columns]], title=title, right=columns)


def capped(lines: Sequence[str], *, to_stderr: bool = False) -> None:
    """The first SHOWN lines, indented, then how many more there were."""
    out = err_console if to_stderr else console
    for line in lines[:SHOWN]:
        out.print(f"  {line}", highlight=False)
    if len(lines) > SHOWN:
        out.print(f"  … and {len(lines) - SHOWN} more", highlight=False)


def warn_missing_files(missing: Mapping[int, str]) -> None:
    """Name the images kept without their file, so their owner can find and re-upload them."""
    if not missing:
        return
    console.print(
        f"warning: {len(missing)} images have no file (their rows are kept; GET /images/ID/file answers 404 "
        "for them): delete them or upload them again",
        highlight=False,
    )
    capped([f"image {image_id}: {why}" for image_id, why in missing.items()])


def how_it_ended(stop_reason: str, epochs_run: int) -> str:
    """A training run's stop reason ("epochs", "early stopping", "already finished") as words."""
    if stop_reason == "epochs":
        return f"ran all {epochs_run} epochs"
    return f"{stop_reason} after {epochs_run} epochs"


def wrote_fitted(target: Path, file_id: str, skipped: int) -> None:
    """The end of `cbir fit` and `cbir finetune`: what was skipped, and how to use what was written."""
    if skipped:
        console.print(f"skipped {skipped} unreadable files")
    console.print(
        f"wrote {target} (id {file_id}): use it with --fitted {target} or CBIR_FITTED={target}; "
        "a collection built by another encoder then needs `cbir reindex`"
    )

"""How an error ends a command: one line on stderr that says what is wrong and what to do, and an exit status.

1: the product refused (an API error, a job error, a vector index or encoder problem: the message says what
to do); 2: the input is wrong (a missing file or folder, a bad value); a job error may choose its own
(app/errors.py JobError.exit_code). Anything else is a bug and keeps its traceback. Commands that finish
end with 0, or with SKIPPED or STOPPED below.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from app.cli.render import err_console
from app.errors import ApiError, JobError
from index import VectorIndexError

EXPLAINED = 1  # the message says what to do
BAD_INPUT = 2  # as click's own usage errors
SKIPPED = 3  # done, but some files were skipped (`cbir index --strict`, `cbir images import`)
STOPPED = 130  # stopped by SIGTERM or SIGINT after committing the batch in flight, as a shell reports it


def _explained(exc: BaseException) -> bool:
    """Errors whose message says what to do; models' is checked only if models was loaded (torch)."""
    models = sys.modules.get("models.errors")
    return isinstance(exc, ApiError | VectorIndexError) or (
        models is not None and isinstance(exc, models.EncoderConfigError)
    )


def exit_code(exc: BaseException) -> int | None:
    """The exit status an error ends a command with; None for a bug."""
    if isinstance(exc, JobError):
        return exc.exit_code
    if _explained(exc):
        return EXPLAINED
    if isinstance(exc, FileNotFoundError | NotADirectoryError | ValueError):
        return BAD_INPUT
    return None


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        err_console.print(f"[bold red]error:[/] {getattr(exc, 'detail', None) or exc}")
        raise typer.Exit(code) from exc

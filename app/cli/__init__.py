"""The `cbir` command: serve the API, index folders, search, evaluate and maintain a collection.

Every command reads the same settings as the service (environment, prefix CBIR_) and takes the ones it
uses as flags too (app/cli/options.py). Each module here is one group of commands; this one assembles them.
Errors print one line that says what is wrong and what to do, and exit non-zero (app/cli/exits.py).
"""

from __future__ import annotations

import typer

from app.cli import backups, evaluating, indexing, learning, searching, serving, training
from app.cli.database import db_app
from app.cli.images import images_app
from app.cli.keys import keys_app

app = typer.Typer(
    help="Content-based image retrieval: index a collection and find similar images.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts show defaults as [env CBIR_X; value]: not markup
)
for part in (serving, indexing, searching, evaluating, learning, backups, training):
    app.add_typer(part.commands)  # no name: their commands are `cbir`'s own
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(training.train_app, name="train")
app.add_typer(images_app, name="images")


def main() -> None:
    app()

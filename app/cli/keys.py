"""`cbir keys`: API keys, created (and shown) once, listed without their secret, revoked. Loads no model."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from app.auth.keys import Role, create_key, list_keys, revoke_key
from app.cli.options import DATABASE, command, group
from app.cli.render import console, err_console, json_line, rows_table
from app.config import Settings

keys_app = group("API keys: once one exists, writes need a write key.")

FIELDS = ("id", "name", "role", "prefix", "created_at", "revoked_at")


def key_sessions(settings: Settings, *, creating: bool = False) -> sessionmaker[Session]:
    """The database's sessions; the first key may come before the first image (``creating``)."""
    from app.collection.rows import open_rows

    return open_rows(settings, existing=not creating, upgrade=True).sessions


@command(keys_app, DATABASE, name="create")
def keys_create(
    settings: Settings,
    role: Annotated[
        Role, typer.Option(help="read: search and get; write: also add and delete; admin: everything.")
    ],
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
) -> None:
    """Create a key and print it once: only its hash is stored."""
    new = create_key(key_sessions(settings, creating=True), name or f"{role} key", role)
    err_console.print(
        f"created key {new.row.id} ({new.row.role}, {new.row.name!r}); store it now, not shown again:"
    )
    print(new.secret)


@command(keys_app, DATABASE, name="list")
def keys_list(
    settings: Settings,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (one object per line) for scripts.")
    ] = False,
) -> None:
    """Keys with their role and state (never the secret)."""
    rows = list_keys(key_sessions(settings))
    if as_json:
        for row in rows:
            json_line({field: getattr(row, field) for field in FIELDS})
        return
    rows_table(
        ("id", "name", "role", "prefix", "created", "revoked"),
        (
            [
                str(row.id),
                row.name,
                row.role,
                row.prefix + "…",
                f"{row.created_at:%Y-%m-%d %H:%M}",
                f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
            ]
            for row in rows
        ),
    )


@command(keys_app, DATABASE, name="revoke")
def keys_revoke(
    settings: Settings,
    key_id: Annotated[int, typer.Argument(help="The key's id (see `cbir keys list`).")],
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    row = revoke_key(key_sessions(settings), key_id)
    if row is None:
        raise ValueError(f"no key with id {key_id}; see `cbir keys list`")
    console.print(f"key {row.id} ({row.name!r}) is revoked")

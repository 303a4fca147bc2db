"""`cbir serve`: the REST API, with the collection opened before the server starts so that a bad setting
is one line of error, not a traceback from the server's startup minutes later."""

from __future__ import annotations

import errno
import os
import socket

import typer

from app.cli.opening import open_collection
from app.cli.options import DATABASE, ENCODER, command
from app.config import Settings

commands = typer.Typer()


@command(commands, "host", "port", DATABASE, ENCODER)
def serve(settings: Settings) -> None:
    """Start the REST API (applies pending database migrations first). OpenAPI docs at /docs."""
    import uvicorn

    from app.main import create_app
    from app.observability import configure_logging

    check_port_free(settings.host, settings.port)  # before minutes of loading, not after
    configure_logging(settings.log_level, settings.log_format)
    share_cores(settings)
    collection = open_collection(settings)
    uvicorn.run(
        create_app(settings, collection),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers go through configure_logging's JSON handler
        access_log=False,  # the app logs each request itself, with its request id, route and duration
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a port that another process listens on (uvicorn would say so after loading)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on {host!r}: {exc.strerror} (check --host / CBIR_HOST)") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"port {port} on {host} is already in use (another `cbir serve`?): stop it, or choose "
                    "another port with --port / CBIR_PORT"
                ) from exc
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def share_cores(settings: Settings) -> None:
    """Each inference worker gets its share of the cores: torch's default (every core for one forward pass)
    makes parallel passes fight over the same cores, and the busiest pass waits for the slowest thread."""
    import torch

    threads = settings.inference_threads or max(1, (os.cpu_count() or 1) // settings.inference_workers)
    torch.set_num_threads(threads)

"""The `cbir` command: serve the API, index folders, search, evaluate and maintain a collection.

Every command reads the same settings as the service (environment, prefix CBIR_) and takes the common ones
as flags too. Errors print one line that says what is wrong and what to do, and exit non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
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

from app.auth.keys import Role, create_key, list_keys, revoke_key
from app.config import Settings
from app.errors import CbirError
from app.search.queries import parse_box
from index import VectorIndexError
from index.factory import AUTO as AUTO_INDEX
from index.factory import INDEX_TYPES, MIN_TRAIN_VECTORS
from index.faiss.types import index_type as registered_index_type

if TYPE_CHECKING:  # models (torch) is imported by the commands that need it, not by `cbir --help`
    from app.collection.facade import Collection
    from models import ImageEncoder
    from models.training import EpochReport

app = typer.Typer(
    help="Content-based image retrieval: index a collection and find similar images.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts show defaults as [env CBIR_X; value]: not markup
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
train_app = typer.Typer(
    help="Train a model on your own pictures.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(train_app, name="train")
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
EncoderSpec = Annotated[
    str | None,
    typer.Option("--encoder", help="dae:PATH for a trained autoencoder [env CBIR_ENCODER; the backbone]."),
]
Head = Annotated[str | None, typer.Option("--head", help="Pooling head: gap, gem, mac [env CBIR_HEAD; gap].")]
Weights = Annotated[Path | None, typer.Option("--weights", help="Backbone weights file [env CBIR_WEIGHTS].")]
MaxSide = Annotated[int | None, typer.Option("--max-side", help="Resize images to this long side [320].")]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="Images per forward pass [4 on CPU, 256 on CUDA].")
]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto].")]
Workers = Annotated[int | None, typer.Option("--workers", help="Processes decoding images [2].")]
Fitted = Annotated[
    Path | None, typer.Option("--fitted", help="Parameters from `cbir fit` [env CBIR_FITTED; none].")
]
Scales = Annotated[
    str | None, typer.Option("--scales", help="Multi-scale factors, e.g. 1,0.7071,0.5 [env CBIR_SCALES; 1].")
]
QueryExpansion = Annotated[
    int | None,
    typer.Option("--qe", help="Query expansion: neighbours averaged into the query, 0 = off [10].", min=0),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (one object per line) for scripts.")]
DatabaseAugmentation = Annotated[
    int | None,
    typer.Option("--dba", help="Database augmentation: neighbours averaged per hit, 0 = off [10].", min=0),
]


def make_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the environment, with the flags the user gave taking precedence.

    Commands pass their ``locals()``: every parameter named like a setting and given a value overrides it.
    """
    given = {key: value for key, value in flags.items() if key in Settings.model_fields and value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ValueError(invalid_settings_message(exc, set(given))) from exc
    except SettingsError as exc:  # an environment value that is not even parseable (lists want JSON)
        raise ValueError(
            f"{exc}: settings that hold lists take JSON, e.g. CBIR_CORS_ORIGINS='[\"https://example.com\"]'"
        ) from exc


def invalid_settings_message(exc: ValidationError, from_flags: set[str]) -> str:
    """One line per bad setting, naming where it came from (flag or CBIR_ variable) and what it got."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = "its command-line flag" if field in from_flags else f"CBIR_{field.upper()}"
        problems.append(f"setting {field} ({where}) is {error.get('input')!r}: {error['msg']}")
    return "; ".join(problems) or str(exc)


def _explained(exc: BaseException) -> bool:
    """Errors whose message says what to do; models' is checked only if models was loaded (torch)."""
    models = sys.modules.get("models.errors")
    return isinstance(exc, CbirError | VectorIndexError) or (
        models is not None and isinstance(exc, models.EncoderConfigError)
    )


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if _explained(exc):
            err_console.print(f"[bold red]error:[/] {getattr(exc, 'detail', None) or exc}")
            raise typer.Exit(1) from exc
        if isinstance(exc, FileNotFoundError | NotADirectoryError | ValueError):
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from exc
        raise


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


@contextmanager
def index_progress(description: str, total: int, every: float) -> Iterator[Callable[[int, int], None]]:
    """A bar at a terminal; elsewhere (docker logs, cron, a pipe) a line every ``every`` seconds."""
    if err_console.is_terminal:
        with progress_bar(description, total) as update:
            yield update
        return
    from app.progress_log import ProgressLines

    yield ProgressLines(description, total, sys.stderr, every)


@dataclass
class TrainingProgress:
    on_read: Callable[[int, int], None]
    on_step: Callable[[int, int, int, float], None]
    on_epoch: Callable[[EpochReport], None]


@contextmanager
def training_progress(epochs: int, reading: int | None = None) -> Iterator[TrainingProgress]:
    """A bar over the pictures read (when ``reading`` counts them), then over each epoch's steps with the
    running loss, and one printed line per finished epoch (rich shows one live display at a time)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        reader = progress.add_task("reading", total=reading, note="") if reading is not None else None
        task = progress.add_task("training", total=None, note="", start=reading is None)

        def on_read(done: int, pictures: int) -> None:
            if reader is not None:
                progress.update(reader, completed=done, note=f"{pictures} pictures")

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            progress.start_task(task)
            progress.update(
                task,
                completed=step,
                total=steps,
                description=f"epoch {epoch}/{epochs}",
                note=f"loss {loss:.5f}",
            )

        def on_epoch(report: EpochReport) -> None:
            val = f"{report.val_loss:.5f}" if report.val_loss is not None else "-"
            progress.console.print(
                f"epoch {report.epoch}/{report.epochs}: loss {report.train_loss:.5f}, validation {val}"
                f"{' (best)' if report.improved else ''}, {report.seconds:.1f} s"
            )

        yield TrainingProgress(on_read, on_step, on_epoch)


def how_it_ended(stop_reason: str, epochs_run: int) -> str:
    """A training run's stop reason ("epochs", "early stopping", "already finished") as words."""
    if stop_reason == "epochs":
        return f"ran all {epochs_run} epochs"
    return f"{stop_reason} after {epochs_run} epochs"


def open_collection(settings: Settings, *, existing: bool = False) -> Collection:
    """``existing``: refuse (rather than create) a collection that is not there, for the reading commands."""
    from app.collection.facade import Collection, require_collection
    from app.encoders import encoder_from_settings

    if existing:
        require_collection(settings)
    return Collection.open(settings, encoder_from_settings(settings))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    device: Device = None,
) -> None:
    """Start the REST API (applies pending database migrations first). OpenAPI docs at /docs."""
    import uvicorn

    from app.main import create_app
    from app.observability import configure_logging

    with friendly_errors():
        settings = make_settings(locals())
        check_port_free(settings.host, settings.port)  # before minutes of loading, not after
        configure_logging(settings.log_level, settings.log_format)
        _share_cores(settings)
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
    import errno
    import socket

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


def _share_cores(settings: Settings) -> None:
    """Each inference worker gets its share of the cores: torch's default (every core for one forward pass)
    makes parallel passes fight over the same cores, and the busiest pass waits for the slowest thread."""
    import torch

    threads = settings.inference_threads or max(1, (os.cpu_count() or 1) // settings.inference_workers)
    torch.set_num_threads(threads)


@app.command("index")
def index_cmd(
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
    gpu_decode: Annotated[
        bool | None,
        typer.Option("--gpu-decode/--no-gpu-decode", help="On CUDA, decode JPEGs on the GPU (default on)."),
    ] = None,
    compile: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the backbone (default off).")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
    commit_every: Annotated[int | None, typer.Option(help="Save the index every N images.")] = None,
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
    from app.progress_log import stop_on_signals

    with friendly_errors(), stop_on_signals() as stop:
        settings = make_settings(locals())
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
        for skipped in report.skipped[:20]:
            console.print(f"  skipped {skipped.path}: {skipped.reason}", highlight=False)
        if len(report.skipped) > 20:
            console.print(f"  … and {len(report.skipped) - 20} more")
        if report.stopped:
            err_console.print("stopped by a signal after committing the batch in flight: run again to go on")
            raise typer.Exit(130)
        if strict and report.skipped:
            raise typer.Exit(3)


@app.command()
def search(
    image: Annotated[Path, typer.Argument(help="The query image.", exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="How many results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    box: Annotated[
        str | None, typer.Option("--box", help="Search for a region only: x0,y0,x1,y1 in IMAGE's pixels.")
    ] = None,
    query_expansion: QueryExpansion = None,
    database_augmentation: DatabaseAugmentation = None,
    nprobe: Annotated[
        int | None,
        typer.Option("--nprobe", min=1, max=65536, help="IVF: cells scanned [env CBIR_NPROBE; the index's]."),
    ] = None,
    ef_search: Annotated[
        int | None,
        typer.Option(
            "--ef-search", min=1, max=4096, help="HNSW: candidate list [env CBIR_EF_SEARCH; the index's]."
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    device: Device = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help='Only images matching a JSON filter, e.g. \'{"sku": "A-17"}\'.'),
    ] = None,
    path_prefix: Annotated[str | None, typer.Option(help="Only images whose path starts with this.")] = None,
    server: Annotated[
        str | None,
        typer.Option(
            envvar="CBIR_SERVER", help="Ask a running service (its URL) instead of loading the model here."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="CBIR_API_KEY", help="--server: the API key to send, if it needs one."),
    ] = None,
) -> None:
    """Find the K images of the collection most similar to IMAGE."""
    with friendly_errors():
        settings = make_settings(locals())
        from app.collection.filters import parse_filter

        spec = parse_filter(filter_, "--filter")
        if server:
            fields = {"k": k, "box": box, "filter": filter_, "path_prefix": path_prefix}
            fields |= {"query_expansion": query_expansion, "database_augmentation": database_augmentation}
            fields |= {"nprobe": nprobe, "ef_search": ef_search}
            rows = search_remote(server, api_key, image, {n: v for n, v in fields.items() if v is not None})
        else:
            rows = _search_here(
                settings, image, k, box, spec, path_prefix, query_expansion, database_augmentation
            )
        if as_json:
            console.print_json(json.dumps(rows))
            return
        table = Table(title=f"{len(rows)} most similar to {image.name}")
        for column in ("rank", "id", "score", "match", "path", "metadata"):
            table.add_column(column, justify="right" if column in ("rank", "id", "score") else "left")
        for rank, row in enumerate(rows, 1):
            table.add_row(
                str(rank),
                str(row["id"]),
                f"{row['score']:.4f}",
                str(row.get("match", "")),
                row["path"],
                json.dumps(row["metadata"]),
            )
        console.print(table)


def _search_here(
    settings: Settings,
    image: Path,
    k: int,
    box: str | None,
    spec: dict[str, Any] | None,
    path_prefix: str | None,
    query_expansion: int | None,
    database_augmentation: int | None,
) -> list[dict[str, Any]]:
    from app.collection.catalog import matching_ids

    region = parse_box(box) if box is not None else None
    collection = open_collection(settings, existing=True)
    try:
        allowed = matching_ids(collection, spec, path_prefix) if spec or path_prefix else None
        asked = query_expansion is not None or database_augmentation is not None
        rerank = collection.rerank if asked else None
        if allowed is not None and not len(allowed):
            return []
        hits = collection.search_image(image.read_bytes(), k, rerank, region, allowed_ids=allowed)
    finally:
        collection.close()
    return [
        {
            "id": h.image.id,
            "score": round(h.score, 6),
            "match": h.match,
            "p_same": round(h.p_same, 4),
            "inliers": h.inliers,
            "original_name": h.image.original_name,
            "path": h.image.original_name,
            "metadata": h.image.meta,
        }
        for h in hits
    ]


def search_remote(
    server: str, api_key: str | None, image: Path, fields: dict[str, Any]
) -> list[dict[str, Any]]:
    """POST /search on a running service: no model is loaded here (nor torch imported)."""
    import urllib3

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body: dict[str, Any] = {name: str(value) for name, value in fields.items()}
    body["file"] = (image.name, image.read_bytes())
    url = server.rstrip("/") + "/search"
    try:
        response = urllib3.request("POST", url, fields=body, headers=headers, timeout=60.0, retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise ValueError(f"cannot reach the service at {server} (--server / CBIR_SERVER): {exc}") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status != 200:
        raise ValueError(
            f"the service answered {response.status}: {answer.get('detail') or response.data[:200]!r}"
        )
    return [
        {key: hit[key] for key in ("id", "score", "original_name", "path", "metadata")}
        for hit in answer["results"]
    ]


@app.command()
def stats(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    device: Device = None,
    as_json: AsJson = False,
) -> None:
    """Size, dimension, encoder and index type of the collection."""
    with friendly_errors():
        settings = make_settings(locals())
        collection = open_collection(settings, existing=True)
        figures = collection.stats()
        collection.close()
        if as_json:
            print(json.dumps(figures))
            return
        table = Table(show_header=False)
        for key, value in figures.items():
            table.add_row(key, str(value))
        console.print(table)
        removed = int(figures["removed_entries"])
        if removed:
            console.print(
                f"the HNSW index still holds the vectors of {removed} deleted image{'s' * (removed != 1)} "
                f"({removed / (removed + int(figures['indexed'])):.0%} of its entries): "
                "`cbir index-build` rebuilds it without them"
            )


@app.command()
def evaluate(
    directory: Annotated[Path, typer.Argument(help="A folder with one sub-folder of images per class.")],
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            exists=True,
            dir_okay=False,
            help="Instance retrieval instead of classes: JSON of query name -> relevant names under DIR.",
        ),
    ] = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    query_expansion: QueryExpansion = None,
    database_augmentation: DatabaseAugmentation = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Retrieval quality of the configured encoder and re-ranking, exactly as the service answers: every
    image queries all the others (same class = relevant), or the --ground-truth queries do. Prints mAP and
    P@1/5/10 (and R@1/5/10 with a ground truth), then a JSON line."""
    with friendly_errors():
        settings = make_settings(locals())
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
        from app.encoders import encoder_from_settings
        from app.jobs import bulk
        from app.learn.evaluation import evaluate_folder
        from app.search.reranking import options_from_settings

        model = encoder_from_settings(settings)
        total = sum(1 for _ in bulk.list_files(directory))
        if ground_truth is not None:
            _evaluate_instances(settings, model, directory, ground_truth, total)
            return
        with progress_bar("embedding", total) as update:
            report = evaluate_folder(
                model,
                directory,
                workers=settings.workers,
                max_pixels=settings.max_pixels,
                on_progress=update,
                rerank=options_from_settings(settings),
            )
        figures: dict[str, Any] = {"encoder": model.fingerprint, **report.as_dict()}
        figures["rerank"] = asdict(options_from_settings(settings))
        table = Table(title=f"{directory} — {report.images} images, {report.classes} classes")
        for key in ("mAP", "P@1", "P@5", "P@10", "img_s"):
            table.add_column(key, justify="right")
        table.add_row(*(f"{figures.get(key, 'n/a')}" for key in ("mAP", "P@1", "P@5", "P@10", "img_s")))
        console.print(table)
        if report.skipped:
            console.print(f"skipped {len(report.skipped)} unreadable files")
        print(json.dumps(figures))


def _evaluate_instances(
    settings: Settings, model: ImageEncoder, directory: Path, ground_truth: Path, total: int
) -> None:
    from app.learn.ground_truth import evaluate_ground_truth
    from app.search.reranking import options_from_settings

    with progress_bar("embedding", total) as update:
        report = evaluate_ground_truth(
            model,
            directory,
            ground_truth,
            workers=settings.workers,
            max_pixels=settings.max_pixels,
            rerank=options_from_settings(settings),
            on_progress=update,
        )
    figures: dict[str, Any] = {"encoder": model.fingerprint, **report.as_dict()}
    figures["rerank"] = asdict(options_from_settings(settings))
    columns = ("mAP", "P@1", "P@5", "P@10", "R@1", "R@5", "R@10")
    table = Table(title=f"{directory} — {report.images} images, {report.queries} queries from {ground_truth}")
    for key in columns:
        table.add_column(key, justify="right")
    table.add_row(*(f"{figures.get(key, 'n/a')}" for key in columns))
    console.print(table)
    if report.skipped:
        console.print(f"skipped {len(report.skipped)} unreadable files")
    print(json.dumps(figures))


@app.command()
def fit(
    directory: Annotated[
        Path | None, typer.Argument(help="Images to learn from [the collection's stored images].")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write [DATA_DIR/fitted-HEAD.safetensors].")
    ] = None,
    clusters: Annotated[int | None, typer.Option("--clusters", min=1, help="NetVLAD clusters [8].")] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", min=1, help="Also learn a projection to DIM dimensions.")
    ] = None,
    whiten: Annotated[
        bool, typer.Option("--whiten/--pca", help="Whitened projection, or plain PCA [whiten].")
    ] = True,
    assignment_ratio: Annotated[
        float,
        typer.Option(
            "--assignment-ratio", min=1.0, help="NetVLAD softness r (alpha = ln r / similarity gap) [1.5]."
        ),
    ] = 1.5,
    max_images: Annotated[int, typer.Option("--max-images", min=2, help="Images sampled [1000].")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Sampling and k-means seed [0].")] = 0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Learn the encoder's parameters from images, without labels: NetVLAD centroids (k-means) and/or a
    PCA-whitening projection. Writes a file to give as --fitted / CBIR_FITTED."""
    from app.jobs import bulk
    from app.learn.fit import FitOptions, fit_encoder, stored_image_paths

    with friendly_errors():
        settings = make_settings(locals())
        if directory is not None:
            if not directory.is_dir():
                raise NotADirectoryError(f"{directory} is not a directory")
            paths, source = bulk.list_files(directory), str(directory)
        else:
            paths, source = stored_image_paths(settings), f"collection at {settings.db_url}"
            if not paths:
                raise ValueError(f"the {source} holds no image: give a folder to fit on")
        target = out or settings.data_dir / f"fitted-{settings.head}.safetensors"
        options = FitOptions(
            clusters=clusters,
            projection_dim=dim,
            eigen_power=-0.5 if whiten else 0.0,
            assignment_ratio=assignment_ratio,
            max_images=max_images,
            seed=seed,
        )
        with progress_bar("reading", min(len(paths), max_images)) as update:
            report = fit_encoder(settings, paths, target, options, source=source, on_progress=update)
        parts = [f"fitted on {report.images} images of {source}"]
        if report.clusters is not None:
            parts.append(
                f"{report.clusters} clusters from {report.descriptors} descriptors, alpha {report.alpha:.1f}"
            )
        if report.projection is not None:
            parts.append(f"projection {report.projection}")
        console.print("; ".join(parts) + f" in {report.seconds:.0f} s")
        if report.skipped:
            console.print(f"skipped {len(report.skipped)} unreadable files")
        console.print(
            f"wrote {target} (id {report.file_id}): use it with --fitted {target} or CBIR_FITTED={target}; "
            "a collection built by another encoder then needs `cbir reindex`"
        )


@app.command()
def finetune(
    directory: Annotated[
        Path | None, typer.Argument(help="Pictures to learn from [the collection's stored images].")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="File to write [DATA_DIR/finetuned-HEAD.safetensors]; OUT.ckpt resumes."),
    ] = None,
    classes: Annotated[
        bool,
        typer.Option(
            "--classes/--self-supervised",
            help="Supervised: each sub-folder of DIRECTORY is one class [self-supervised: no labels].",
        ),
    ] = False,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="At most this many epochs [20].")] = 20,
    train_batch: Annotated[
        int, typer.Option("--train-batch", min=2, help="Pictures per step, two views each [64].")
    ] = 64,
    learning_rate: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (one-cycle) [0.001].")
    ] = 1e-3,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature [0.1].")] = 0.1,
    views: Annotated[int, typer.Option("--views", min=2, help="Augmented views per picture [4].")] = 4,
    crop: Annotated[int, typer.Option("--crop", min=32, help="Side of a view in pixels [224].")] = 224,
    validation: Annotated[
        float, typer.Option(help="Fraction held out to pick the best epoch and stop [0.1].")
    ] = 0.1,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without progress [5].")] = 5,
    max_images: Annotated[int, typer.Option("--max-images", min=4, help="Pictures sampled [1000].")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Sampling, views and training seed [0].")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in OUT.ckpt.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    fitted: Fitted = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Fine-tune the encoder's head (NetVLAD after `cbir fit`, or GeM) contrastively on your pictures:
    two views of a picture are positives (or, with --classes, pictures of one folder). Writes a file to give
    as --fitted / CBIR_FITTED."""
    from app.jobs import bulk
    from app.learn.finetune import FinetuneOptions, finetune_encoder
    from app.learn.fit import stored_image_paths
    from models.training.contrastive import ContrastiveConfig

    with friendly_errors():
        settings = make_settings(locals())
        if directory is not None:
            if not directory.is_dir():
                raise NotADirectoryError(f"{directory} is not a directory")
            paths, source = bulk.list_files(directory), str(directory)
        else:
            if classes:
                raise ValueError("--classes needs a DIRECTORY of class folders")
            paths, source = stored_image_paths(settings), f"collection at {settings.db_url}"
            if not paths:
                raise ValueError(f"the {source} holds no image: give a folder to fine-tune on")
        target = out or settings.data_dir / f"finetuned-{settings.head}.safetensors"
        options = FinetuneOptions(
            classes=classes,
            views=views,
            crop=crop,
            max_images=max_images,
            training=ContrastiveConfig(
                epochs=epochs,
                batch_size=train_batch,
                learning_rate=learning_rate,
                temperature=temperature,
                validation=validation,
                patience=patience,
                seed=seed,
            ),
        )
        with training_progress(epochs, reading=min(len(paths), max_images)) as shown:
            report = finetune_encoder(
                settings,
                paths,
                target,
                options,
                source=source,
                resume=resume,
                on_read=shown.on_read,
                on_step=shown.on_step,
                on_epoch=shown.on_epoch,
            )
        run = report.training
        losses = "-"
        if run.best_val_loss is not None and run.first_val_loss is not None:
            losses = f"{run.first_val_loss:.4f} -> {run.best_val_loss:.4f}"
        kind = f"supervised, {report.classes} classes" if report.classes else "self-supervised"
        console.print(
            f"fine-tuned ({kind}) on {run.pictures} pictures of {source}: "
            + f"{how_it_ended(run.stop_reason, run.epochs_run)}, {run.seconds:.0f} s; "
            + f"best epoch {run.best_epoch}, validation loss {losses}"
            + (f"; projection {report.projection}" if report.projection else ""),
            highlight=False,
        )
        if report.skipped:
            console.print(f"skipped {len(report.skipped)} unreadable files")
        console.print(
            f"wrote {target} (id {report.file_id}): use it with --fitted {target} or CBIR_FITTED={target}; "
            "a collection built by another encoder then needs `cbir reindex`"
        )


@app.command()
def duplicates(
    duplicate_threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Cosine from which neighbours are verified as the same picture [CBIR_DUPLICATE_THRESHOLD].",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a list.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    device: Device = None,
) -> None:
    """Group the collection's near-duplicates: the same photo re-saved, resized, cropped a little, edited."""
    from app.search.duplicates import duplicate_groups

    with friendly_errors():
        settings = make_settings(locals())
        collection = open_collection(settings, existing=True)
        groups = duplicate_groups(collection, settings.duplicate_threshold)
        collection.close()
        if as_json:
            rows = [[{"id": row.id, "original_name": row.original_name} for row in group] for group in groups]
            console.print_json(json.dumps({"threshold": settings.duplicate_threshold, "groups": rows}))
            return
        total = sum(len(group) for group in groups)
        console.print(
            f"{len(groups)} groups of near-duplicates ({total} images) at similarity "
            f">= {settings.duplicate_threshold:g}"
        )
        for number, group in enumerate(groups, 1):
            names = ", ".join(f"{row.id} {row.original_name}" for row in group)
            console.print(f"  {number}: {names}", highlight=False)


@app.command()
def reindex(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    encoder: EncoderSpec = None,
    backbone: Backbone = None,
    head: Head = None,
    weights: Weights = None,
    max_side: MaxSide = None,
    scales: Scales = None,
    fitted: Fitted = None,
    batch_size: BatchSize = None,
    device: Device = None,
) -> None:
    """Switch the collection to the configured encoder: re-embed the stored images beside the current index,
    then swap in one transaction; a running service keeps answering and follows. Resumable."""
    from app.jobs.reindex import reindex_collection, stored_count

    with friendly_errors():
        settings = make_settings(locals())
        with progress_bar("re-embedding", stored_count(settings)) as update:
            report = reindex_collection(settings, on_progress=update)
        reused = f" ({report.reused} staged by an earlier run)" if report.reused else ""
        console.print(
            f"re-embedded {report.embedded} images{reused} with {report.fingerprint}; "
            f"switched from {report.previous or 'no recorded encoder'}; index holds {report.indexed}"
        )


@contextmanager
def file_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A bar whose total arrives with the updates: a backup knows its files only after its snapshot."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


IndexTypeOption = Annotated[
    str | None,
    typer.Option(
        "--type",
        help=f"auto or one of {', '.join(INDEX_TYPES)} [env CBIR_INDEX_TYPE; auto: by size and memory "
        "budget].",
    ),
]


@app.command("index-build")
def index_build(
    index_type: IndexTypeOption = None,
    index_memory_mb: Annotated[
        int | None, typer.Option("--memory-mb", help="Memory budget for the auto choice [8192].", min=16)
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild the vector index from the vectors stored in the database, without re-embedding: picks the
    type, trains it on a sample, swaps the file atomically. A running service picks the new file up."""
    from app.jobs.index_build import rebuild_index

    with friendly_errors():
        settings = make_settings(locals())
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


@app.command()
def optimize(
    directory: Annotated[
        Path | None, typer.Argument(help="Pictures to calibrate on [the collection's stored pictures].")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=8, help="Pictures sampled (evenly) [300].")] = 300,
    data_dir: DataDir = None,
    backbone: Backbone = None,
    weights: Weights = None,
    max_side: MaxSide = None,
) -> None:
    """Calibrate the int8 runtime on your own pictures (no labels), cached; then CBIR_RUNTIME=openvino_int8.

    int8 vectors are not fp32's (the calibration goes into the encoder fingerprint): switch an existing
    collection with `cbir reindex` (README, Inference runtimes)."""
    from app.learn.optimize import optimize as calibrate_int8

    with friendly_errors():
        settings = make_settings(locals())
        calibration = calibrate_int8(settings, directory, samples=samples)
        console.print(
            f"int8 model calibrated on {calibration.images} pictures of {calibration.source}, id "
            f"{calibration.calibration_id}, cached in {calibration.model_path.parent}; serve or index with "
            "CBIR_RUNTIME=openvino_int8"
        )


@app.command()
def backup(
    destination: Annotated[Path, typer.Argument(help="A new (or empty) folder to write the backup to.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Copy the collection (database, index, image files) to DESTINATION; safe while the service or a bulk
    index runs: the copy is the collection as of one moment. Loads no model."""
    from app.jobs.backup import backup as run_backup

    with friendly_errors():
        settings = make_settings(locals())
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


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="A folder written by `cbir backup`.")],
    data_dir: DataDir = None,
) -> None:
    """Restore the backup in SOURCE into a new (or empty) data directory (--data-dir), checking every file
    against its recorded hash; then `cbir serve --data-dir` the same folder."""
    from app.jobs.backup import restore as run_restore

    with friendly_errors():
        settings = make_settings(locals())
        with file_progress("restoring") as update:
            report = run_restore(source, settings, on_progress=update)
        console.print(
            f"restored {report.images} images ({report.files} files, {report.bytes / 1e6:,.1f} MB) from the "
            f"backup of {report.created_at} into {report.data_dir} in {report.seconds:.1f} s",
            highlight=False,
        )
        warn_missing_files(report.missing)


def warn_missing_files(missing: dict[int, str], shown: int = 20) -> None:
    """Name the images kept without their file, so their owner can find and re-upload them."""
    if not missing:
        return
    console.print(
        f"warning: {len(missing)} images have no file (their rows are kept; GET /images/ID/file answers 404 "
        "for them): delete them or upload them again",
        highlight=False,
    )
    for image_id, why in list(missing.items())[:shown]:
        console.print(f"  image {image_id}: {why}", highlight=False)
    if len(missing) > shown:
        console.print(f"  … and {len(missing) - shown} more", highlight=False)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply pending migrations to the database."""
    from app.db import migrate
    from app.db.session import open_database

    with friendly_errors():
        settings = make_settings(locals())
        with open_database(settings.db_url, data_dir=settings.data_dir, upgrade=False) as db:
            todo = migrate.pending(db.engine)
            migrate.upgrade(db.engine)
        console.print(f"database at {settings.db_url}: applied {len(todo)} migration(s) {todo}; now at head")


keys_app = typer.Typer(
    help="API keys: once one exists, writes need a write key.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(keys_app, name="keys")


def _key_sessions(data_dir: Path | None, database_url: str | None, *, creating: bool = False) -> Any:
    from app.collection.presence import require_collection
    from app.db.session import open_database

    settings = make_settings(locals())
    if not creating:
        require_collection(settings)
    return open_database(settings.db_url, data_dir=settings.data_dir).sessions


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
        new = create_key(_key_sessions(data_dir, database_url, creating=True), name or f"{role} key", role)
        err_console.print(
            f"created key {new.row.id} ({new.row.role}, {new.row.name!r}); store it now, not shown again:",
        )
        print(new.secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """Keys with their role and state (never the secret)."""
    with friendly_errors():
        if as_json:
            for row in list_keys(_key_sessions(data_dir, database_url)):
                fields = ("id", "name", "role", "prefix", "created_at", "revoked_at")
                print(json.dumps({name: getattr(row, name) for name in fields}, default=str))
            return
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


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    directory: Annotated[
        Path, typer.Argument(help="Folder of pictures, walked recursively; no labels used.")
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Checkpoint file to write (and resume).")] = Path(
        "autoencoder.pt"
    ),
    size: Annotated[int, typer.Option(help="Input side: 28 for digits, 64 to 128 for photos.")] = 28,
    channels: Annotated[int, typer.Option(help="1 (grey) or 3 (colour).")] = 1,
    code_size: Annotated[int, typer.Option(help="Length of the code: the descriptor's dimension.")] = 32,
    width: Annotated[int, typer.Option(help="Channels of the first block, doubled at each halving.")] = 16,
    epochs: Annotated[int, typer.Option(help="At most this many passes over the pictures.")] = 30,
    train_batch: Annotated[int, typer.Option("--train-batch", help="Pictures per training step.")] = 128,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (one-cycle).")] = 3e-3,
    noise: Annotated[str, typer.Option(help="gaussian, masking, salt_pepper or none.")] = "gaussian",
    strength: Annotated[float, typer.Option(help="Gaussian: std in 0..1; others: fraction of pixels.")] = 0.3,
    jitter: Annotated[
        float, typer.Option(help="Random shift/rotation/scale of the input: 0 none, 1 default.")
    ] = 1.0,
    validation: Annotated[
        float, typer.Option(help="Fraction held out to pick the best epoch and stop.")
    ] = 0.1,
    patience: Annotated[
        int, typer.Option(help="Stop after this many epochs without a better validation.")
    ] = 5,
    seed: Annotated[int, typer.Option(help="Same seed, same pictures, same device: same model.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out.")] = False,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Train a denoising autoencoder on the pictures under DIRECTORY; serve it with --encoder dae:OUT."""
    from app.jobs import bulk
    from app.learn.training import load_pictures, train_from_folder
    from models.autoencoder import AutoencoderConfig
    from models.training import NoiseConfig, TrainConfig

    with friendly_errors():
        settings = make_settings(locals())
        model_config = AutoencoderConfig(input_size=size, channels=channels, code_size=code_size, width=width)
        train_config = TrainConfig(
            epochs=epochs,
            batch_size=train_batch,
            learning_rate=learning_rate,
            validation=validation,
            patience=patience,
            seed=seed,
            noise=NoiseConfig(kind=noise, strength=strength, jitter=jitter),
        )
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
        if out.exists() and not resume:
            raise ValueError(
                f"{out} already exists: pass --resume to continue its training, or choose another -o"
            )
        if resume and not out.exists():
            raise FileNotFoundError(
                f"--resume given but {out} does not exist: drop --resume to start a new run"
            )
        with progress_bar("reading", len(bulk.list_files(directory))) as update:
            pictures = load_pictures(
                directory,
                model_config,
                workers=settings.workers,
                max_pixels=settings.max_pixels,
                on_progress=update,
            )
        console.print(
            f"training on {len(pictures.images)} pictures ({pictures.duplicates} duplicates, "
            f"{len(pictures.skipped)} unreadable skipped) at {size}x{size}x{channels}"
        )
        with training_progress(epochs) as shown:
            result = train_from_folder(
                pictures,
                model_config,
                train_config,
                out,
                device=settings.device,
                resume=resume,
                on_step=shown.on_step,
                on_epoch=shown.on_epoch,
            )
        best = f"{result.best_val_loss:.5f}" if result.best_val_loss is not None else "-"
        console.print(
            f"saved {out} ({how_it_ended(result.stop_reason, result.epochs_run)}, {result.seconds:.0f} s; "
            f"best epoch {result.best_epoch}, validation loss {best})\n"
            f"fingerprint {result.fingerprint}\n"
            f"use it with --encoder dae:{out} or CBIR_ENCODER=dae:{out}",
            highlight=False,
        )


@app.command()
def denoise(
    image: Annotated[Path, typer.Argument(help="The picture to rebuild.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the reconstruction (PNG).")],
    noise: Annotated[
        str, typer.Option(help="Noise added first: none, gaussian, masking, salt_pepper.")
    ] = "none",
    strength: Annotated[float, typer.Option(help="Gaussian: std in 0..1; others: fraction of pixels.")] = 0.3,
    encoder: EncoderSpec = None,
    device: Device = None,
) -> None:
    """Write what the configured autoencoder rebuilds from IMAGE: a look at what the model learned."""
    from app.collection.denoising import denoise as rebuild
    from app.collection.denoising import noise_config, require_autoencoder
    from app.encoders import encoder_from_settings

    with friendly_errors():
        settings = make_settings(locals())
        model = require_autoencoder(encoder_from_settings(settings))
        png = rebuild(
            model, image.read_bytes(), max_pixels=settings.max_pixels, noise=noise_config(noise, strength)
        )
        out.write_bytes(png)
        console.print(f"wrote {out} ({model.config.input_size} px, {model.fingerprint})", highlight=False)


if __name__ != "__main__":  # run as `python -m app.cli`, the module imported below registers them
    from app.cli_images import images_app  # it uses the options above

    app.add_typer(images_app, name="images")


def main() -> None:
    app()


if __name__ == "__main__":
    from app.cli import main as imported_main  # app.cli as a module: its command groups all registered

    imported_main()

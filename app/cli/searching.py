"""`cbir search`, `cbir stats` and `cbir duplicates`: asking the collection, here or from a service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.opening import open_collection
from app.cli.options import DATABASE, ENCODER, RERANK, Given, command
from app.cli.render import console, figures_table, json_line, rows_table
from app.config import Settings
from app.search.queries import parse_box

commands = typer.Typer()

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# What `--server` sends as it is given: the service applies its own settings to what is not.
SERVICE_FIELDS = (*RERANK, "nprobe", "ef_search")


@command(commands, *RERANK, "nprobe", "ef_search", DATABASE, ENCODER)
def search(
    settings: Settings,
    given: Given,
    image: Annotated[Path, typer.Argument(help="The query image.", exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="How many results.")] = 10,
    as_json: AsJson = False,
    box: Annotated[
        str | None, typer.Option("--box", help="Search for a region only: x0,y0,x1,y1 in IMAGE's pixels.")
    ] = None,
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
    from app.collection.filters import parse_filter

    spec = parse_filter(filter_, "--filter")
    if server:
        fields = {"k": k, "box": box, "filter": filter_, "path_prefix": path_prefix}
        fields |= {name: given[name] for name in SERVICE_FIELDS}
        rows = search_remote(server, api_key, image, {n: v for n, v in fields.items() if v is not None})
    else:
        rerank = any(given[name] is not None for name in RERANK)
        rows = search_here(settings, image, k, box, spec, path_prefix, rerank=rerank)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    rows_table(
        ("rank", "id", "score", "match", "path", "metadata"),
        (
            [
                str(rank),
                str(row["id"]),
                f"{row['score']:.4f}",
                str(row.get("match", "")),
                row["path"],
                json.dumps(row["metadata"]),
            ]
            for rank, row in enumerate(rows, 1)
        ),
        title=f"{len(rows)} most similar to {image.name}",
        right=("rank", "id", "score"),
    )


def search_here(
    settings: Settings,
    image: Path,
    k: int,
    box: str | None,
    spec: dict[str, Any] | None,
    path_prefix: str | None,
    *,
    rerank: bool,
) -> list[dict[str, Any]]:
    """``rerank``: re-rank as the settings say (a --qe or --dba flag was given); else the collection's way."""
    from app.collection.catalog import matching_ids

    region = parse_box(box) if box is not None else None
    collection = open_collection(settings, existing=True)
    try:
        allowed = matching_ids(collection, spec, path_prefix) if spec or path_prefix else None
        if allowed is not None and not len(allowed):
            return []
        options = collection.rerank if rerank else None
        hits = collection.search_image(image.read_bytes(), k, options, region, allowed_ids=allowed)
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


@command(commands, DATABASE, ENCODER)
def stats(settings: Settings, as_json: AsJson = False) -> None:
    """Size, dimension, encoder and index type of the collection."""
    collection = open_collection(settings, existing=True)
    figures = collection.stats()
    collection.close()
    if as_json:
        json_line(figures)
        return
    figures_table(figures)
    removed = int(figures["removed_entries"])
    if removed:
        console.print(
            f"the HNSW index still holds the vectors of {removed} deleted image{'s' * (removed != 1)} "
            f"({removed / (removed + int(figures['indexed'])):.0%} of its entries): "
            "`cbir index-build` rebuilds it without them"
        )


@command(commands, "duplicate_threshold", DATABASE, ENCODER)
def duplicates(settings: Settings, as_json: AsJson = False) -> None:
    """Group the collection's near-duplicates: the same photo re-saved, resized, cropped a little, edited."""
    from app.search.duplicates import duplicate_groups

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

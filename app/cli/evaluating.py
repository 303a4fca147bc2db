"""`cbir evaluate`: the retrieval quality of the configured encoder and re-ranking on a labelled folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.options import ENCODER, READING, RERANK, command
from app.cli.progress import progress_bar
from app.cli.render import console, json_line, metrics_table
from app.config import Settings

if TYPE_CHECKING:
    from models import ImageEncoder

commands = typer.Typer()

CLASS_FIGURES = ("mAP", "P@1", "P@5", "P@10", "img_s")
INSTANCE_FIGURES = ("mAP", "P@1", "P@5", "P@10", "R@1", "R@5", "R@10")


@command(commands, ENCODER, RERANK, READING)
def evaluate(
    settings: Settings,
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
) -> None:
    """Retrieval quality of the configured encoder and re-ranking, exactly as the service answers: every
    image queries all the others (same class = relevant), or the --ground-truth queries do. Prints mAP and
    P@1/5/10 (and R@1/5/10 with a ground truth), then a JSON line."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    from app.encoders import encoder_from_settings
    from app.jobs import bulk
    from app.learn.evaluation import evaluate_folder
    from app.search.reranking import options_from_settings

    model = encoder_from_settings(settings)
    total = sum(1 for _ in bulk.list_files(directory))
    if ground_truth is not None:
        evaluate_instances(settings, model, directory, ground_truth, total)
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
    title = f"{directory} — {report.images} images, {report.classes} classes"
    show_figures(settings, model, report.as_dict(), len(report.skipped), CLASS_FIGURES, title)


def evaluate_instances(
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
    title = f"{directory} — {report.images} images, {report.queries} queries from {ground_truth}"
    show_figures(settings, model, report.as_dict(), len(report.skipped), INSTANCE_FIGURES, title)


def show_figures(
    settings: Settings,
    model: ImageEncoder,
    measured: Mapping[str, Any],
    skipped: int,
    columns: tuple[str, ...],
    title: str,
) -> None:
    """The figures as a table, then as one JSON line with the encoder and re-ranking that made them."""
    from app.search.reranking import options_from_settings

    figures: dict[str, Any] = {"encoder": model.fingerprint, **measured}
    figures["rerank"] = asdict(options_from_settings(settings))
    metrics_table(figures, columns, title)
    if skipped:
        console.print(f"skipped {skipped} unreadable files")
    json_line(figures)

"""`cbir evaluate`: the retrieval quality of the configured encoder and re-ranking on a labelled folder."""

from __future__ import annotations

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
    figures: dict[str, Any] = {"encoder": model.fingerprint, **report.as_dict()}
    figures["rerank"] = asdict(options_from_settings(settings))
    metrics_table(figures, CLASS_FIGURES, f"{directory} — {report.images} images, {report.classes} classes")
    if report.skipped:
        console.print(f"skipped {len(report.skipped)} unreadable files")
    json_line(figures)


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
    figures: dict[str, Any] = {"encoder": model.fingerprint, **report.as_dict()}
    figures["rerank"] = asdict(options_from_settings(settings))
    title = f"{directory} — {report.images} images, {report.queries} queries from {ground_truth}"
    metrics_table(figures, INSTANCE_FIGURES, title)
    if report.skipped:
        console.print(f"skipped {len(report.skipped)} unreadable files")
    json_line(figures)

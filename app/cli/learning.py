"""`cbir fit`, `cbir finetune` and `cbir optimize`: learning the encoder's parameters, and calibrating its
int8 runtime, from the user's own pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.options import BACKBONE, DATABASE, READING, command
from app.cli.progress import progress_bar, training_progress
from app.cli.render import console, how_it_ended, wrote_fitted
from app.config import Settings

commands = typer.Typer()


def pictures_to_learn_from(
    settings: Settings, directory: Path | None, purpose: str
) -> tuple[list[Path], str]:
    """The pictures under ``directory``, else the collection's stored ones; and where they come from."""
    from app.jobs import bulk
    from app.learn.fit import stored_image_paths

    if directory is not None:
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
        return bulk.list_files(directory), str(directory)
    source = f"collection at {settings.db_url}"
    paths = stored_image_paths(settings)
    if not paths:
        raise ValueError(f"the {source} holds no image: give a folder to {purpose} on")
    return paths, source


@command(commands, DATABASE, BACKBONE, READING)
def fit(
    settings: Settings,
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
) -> None:
    """Learn the encoder's parameters from images, without labels: NetVLAD centroids (k-means) and/or a
    PCA-whitening projection. Writes a file to give as --fitted / CBIR_FITTED."""
    from app.learn.fit import FitOptions, fit_encoder

    paths, source = pictures_to_learn_from(settings, directory, "fit")
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
    wrote_fitted(target, report.file_id, len(report.skipped))


@command(commands, DATABASE, BACKBONE, "fitted", READING)
def finetune(
    settings: Settings,
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
) -> None:
    """Fine-tune the encoder's head (NetVLAD after `cbir fit`, or GeM) contrastively on your pictures:
    two views of a picture are positives (or, with --classes, pictures of one folder). Writes a file to give
    as --fitted / CBIR_FITTED."""
    from app.learn.finetune import FinetuneOptions, finetune_encoder
    from models.training.contrastive import ContrastiveConfig

    if directory is None and classes:
        raise ValueError("--classes needs a DIRECTORY of class folders")
    paths, source = pictures_to_learn_from(settings, directory, "fine-tune")
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
    wrote_fitted(target, report.file_id, len(report.skipped))


@command(commands, "data_dir", "backbone", "weights", "max_side")
def optimize(
    settings: Settings,
    directory: Annotated[
        Path | None, typer.Argument(help="Pictures to calibrate on [the collection's stored pictures].")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=8, help="Pictures sampled (evenly) [300].")] = 300,
) -> None:
    """Calibrate the int8 runtime on your own pictures (no labels), cached; then CBIR_RUNTIME=openvino_int8.

    int8 vectors are not fp32's (the calibration goes into the encoder fingerprint): switch an existing
    collection with `cbir reindex` (README, Inference runtimes)."""
    from app.learn.optimize import optimize as calibrate_int8

    calibration = calibrate_int8(settings, directory, samples=samples)
    console.print(
        f"int8 model calibrated on {calibration.images} pictures of {calibration.source}, id "
        f"{calibration.calibration_id}, cached in {calibration.model_path.parent}; serve or index with "
        "CBIR_RUNTIME=openvino_int8"
    )

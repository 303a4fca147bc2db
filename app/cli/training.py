"""`cbir train autoencoder` and `cbir denoise`: a model trained on the user's own pictures, and a look at
what it learned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.options import command, group
from app.cli.progress import progress_bar, training_progress
from app.cli.render import console, how_it_ended
from app.config import Settings

train_app = group("Train a model on your own pictures.")
commands = typer.Typer()


@command(train_app, "device", "workers", name="autoencoder")
def train_autoencoder(
    settings: Settings,
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
) -> None:
    """Train a denoising autoencoder on the pictures under DIRECTORY; serve it with --encoder dae:OUT."""
    from app.jobs import bulk
    from app.learn.training import load_pictures, train_from_folder
    from models.autoencoder import AutoencoderConfig
    from models.training import NoiseConfig, TrainConfig

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
        raise FileNotFoundError(f"--resume given but {out} does not exist: drop --resume to start a new run")
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


@command(commands, "encoder", "device")
def denoise(
    settings: Settings,
    image: Annotated[Path, typer.Argument(help="The picture to rebuild.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the reconstruction (PNG).")],
    noise: Annotated[
        str, typer.Option(help="Noise added first: none, gaussian, masking, salt_pepper.")
    ] = "none",
    strength: Annotated[float, typer.Option(help="Gaussian: std in 0..1; others: fraction of pixels.")] = 0.3,
) -> None:
    """Write what the configured autoencoder rebuilds from IMAGE: a look at what the model learned."""
    from app.collection.denoising import denoise as rebuild
    from app.collection.denoising import noise_config, require_autoencoder
    from app.encoders import encoder_from_settings

    model = require_autoencoder(encoder_from_settings(settings))
    png = rebuild(
        model, image.read_bytes(), max_pixels=settings.max_pixels, noise=noise_config(noise, strength)
    )
    out.write_bytes(png)
    console.print(f"wrote {out} ({model.config.input_size} px, {model.fingerprint})", highlight=False)

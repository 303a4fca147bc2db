"""`cbir train autoencoder`: a folder of the user's pictures -> a trained autoencoder checkpoint.

Pictures are read and decoded exactly as the bulk job reads them (same decoder, same limits, threads), then
prepared by the autoencoder's own preprocessing, so the model trains on what it will later be shown. Folder
names are never read: training uses no labels. Identical files count once, so a folder with copies does not
weigh some pictures twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.files.decoding import Skipped, list_files
from app.jobs.records import ImageRecord
from app.learn.embedding import Reading, embed_files
from models.autoencoder import AutoencoderConfig, image_to_tensor
from models.training import EpochReport, TrainConfig, TrainResult, train_autoencoder
from models.training.autoencoder import StepCallback


@dataclass
class LoadedPictures:
    images: torch.Tensor  # (N, channels, size, size) uint8
    files: int
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def load_pictures(
    root: Path,
    config: AutoencoderConfig,
    *,
    workers: int,
    max_pixels: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> LoadedPictures:
    """Every readable picture under root as the network's uint8 input; the rest is listed as skipped."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    paths = list_files(root)

    def network_input(pictures: list[ImageRecord]) -> torch.Tensor:
        [picture] = pictures
        return image_to_tensor(picture.decoded.image, config).mul(255).round().to(torch.uint8)

    reading = Reading()
    tensors = [
        embedded.output
        for embedded in embed_files(
            paths,
            network_input,
            max_side=config.input_size,
            max_pixels=max_pixels,
            workers=workers,
            distinct=True,
            reading=reading,
            on_progress=on_progress,
        )
    ]
    if not tensors:
        raise ValueError(f"no readable picture under {root}: nothing to train on")
    return LoadedPictures(
        images=torch.stack(tensors), files=len(paths), duplicates=reading.duplicates, skipped=reading.skipped
    )


def train_from_folder(
    pictures: LoadedPictures,
    model_config: AutoencoderConfig,
    train_config: TrainConfig,
    out: Path,
    *,
    device: str,
    resume: bool,
    on_step: StepCallback | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Refuses to overwrite a checkpoint unless resuming it: a collection may be indexed with that model."""
    if out.exists() and not resume:
        raise ValueError(
            f"{out} already exists: pass --resume to continue its training, or choose another output path"
        )
    if resume and not out.exists():
        raise FileNotFoundError(f"--resume given but {out} does not exist: drop --resume to start a new run")
    return train_autoencoder(
        pictures.images,
        model_config,
        train_config,
        out,
        device=device,
        resume=resume,
        on_step=on_step,
        on_epoch=on_epoch,
    )

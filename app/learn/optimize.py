"""`cbir optimize`: calibrate the int8 runtime on the user's own pictures (no labels) and cache the model.

The pictures are a folder the user names, or the collection's stored copies; an evenly spaced sample of
them (deterministic, so the same folder gives the same calibration id) is read exactly as the bulk job
reads (app/learn/embedding.py); what does not decode is left out of the sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from app.config import Settings
from app.files.decoding import list_files
from app.jobs.records import ImageRecord
from app.learn.embedding import embed_files
from models import EncoderConfigError, build_backbone, to_tensor
from models.runtimes import RuntimeContext
from models.runtimes.int8 import DEFAULT_SAMPLES, Calibration, calibrate

__all__ = ["DEFAULT_SAMPLES", "calibration_inputs", "optimize"]


def evenly_spaced(paths: Sequence[Path], count: int) -> list[Path]:
    if len(paths) <= count:
        return list(paths)
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def calibration_inputs(
    paths: Sequence[Path], *, max_side: int, max_pixels: int, samples: int, workers: int
) -> tuple[list[torch.Tensor], list[str]]:
    """(network inputs, sha256 of each picture) of up to ``samples`` decodable pictures among ``paths``."""

    def network_inputs(pictures: list[ImageRecord]) -> list[torch.Tensor]:
        return [to_tensor(picture.decoded.image, max_side) for picture in pictures]

    tensors: list[torch.Tensor] = []
    ids: list[str] = []
    for embedded in embed_files(
        evenly_spaced(paths, samples),
        network_inputs,
        max_side=max_side,
        max_pixels=max_pixels,
        workers=workers,
    ):
        tensors.extend(embedded.output)
        ids.extend(picture.sha256 for picture in embedded.pictures)
    return tensors, ids


def optimize(settings: Settings, source: Path | None, *, samples: int = DEFAULT_SAMPLES) -> Calibration:
    """Calibrate int8 for the configured backbone on ``source`` (else the collection's stored pictures)."""
    if settings.encoder:
        raise EncoderConfigError("`cbir optimize` calibrates the backbone encoder; unset CBIR_ENCODER")
    if source is None:
        source = settings.images_dir
        if not source.is_dir():
            raise EncoderConfigError(
                f"the collection at {settings.data_dir} has no stored pictures ({source}): give a folder, "
                "`cbir optimize DIR`"
            )
    paths = list_files(source)
    tensors, ids = calibration_inputs(
        paths,
        max_side=settings.max_side,
        max_pixels=settings.max_pixels,
        samples=samples,
        workers=settings.workers,
    )
    built = build_backbone(settings.backbone, settings.weights)
    context = RuntimeContext(
        f"{settings.backbone}@{built.weights_id}", settings.runtime_cache_dir, settings.inference_threads
    )
    return calibrate(
        built.module.eval().requires_grad_(False),
        tensors,
        context,
        picture_ids=ids,
        max_side=settings.max_side,
        source=str(source.resolve()),
    )

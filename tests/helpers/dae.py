"""Tiny trained autoencoders for tests: 16 px grey, a few hundred weights, one short epoch.

Real training on real data is far too slow for the suite; these exercise the same code paths (training,
checkpoint, loading, fingerprint) in about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.autoencoder import AutoencoderConfig
from models.training import NoiseConfig, TrainConfig, TrainResult, train_autoencoder

TINY = AutoencoderConfig(input_size=16, channels=1, code_size=8, width=4)


def blobs(count: int, seed: int = 0, side: int = 16) -> torch.Tensor:
    """(count, 1, side, side) uint8 smooth random shapes: structure an autoencoder can learn quickly."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 1, 4, 4), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return smooth.mul(255).round().to(torch.uint8)


def tiny_training(epochs: int = 1, seed: int = 0, **overrides: object) -> TrainConfig:
    options: dict[str, object] = {
        "epochs": epochs,
        "batch_size": 8,
        "seed": seed,
        "noise": NoiseConfig("gaussian", 0.2, jitter=1.0),
        **overrides,
    }
    return TrainConfig(**options)  # type: ignore[arg-type]


def train_tiny(
    path: Path, *, seed: int = 0, epochs: int = 1, images: torch.Tensor | None = None
) -> TrainResult:
    data = blobs(32) if images is None else images
    return train_autoencoder(data, TINY, tiny_training(epochs, seed), path, device="cpu")

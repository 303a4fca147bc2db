"""What the app needs from an encoder, so a backbone + head and a trained autoencoder are interchangeable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageEncoder"]


@runtime_checkable
class ImageEncoder(Protocol):
    """Pictures in, L2-normalised float32 rows out, named by a fingerprint.

    The collection stores ``fingerprint`` with every vector and refuses vectors of another one, so it must
    change whenever the vectors would; ``max_side`` is what uploads are decoded to before ``embed``.
    """

    dim: int
    fingerprint: str
    max_side: int
    device: torch.device
    batch_size: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, dim) float32 rows, L2-normalised, in input order."""
        ...

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """The same from a batch already prepared by the encoder's own preprocessing (benchmarks)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the service reports about its encoder."""
        ...

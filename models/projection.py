"""A learned linear projection after pooling: PCA (dimension reduction) or PCA-whitening.

y = (x - mean) @ matrix, then the encoder L2-normalises y. The parameters are learned without labels by
`cbir fit` (on the collection, or on a reference folder) and arrive here as tensors; the eigen-power that made
``matrix`` (0: plain PCA, -0.5: full whitening) is kept as a setting, so it is part of the fingerprint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.errors import EncoderConfigError

__all__ = ["Projection"]


class Projection(nn.Module):
    mean: torch.Tensor
    matrix: torch.Tensor

    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor, eigen_power: float) -> None:
        super().__init__()
        if mean.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != mean.shape[0]:
            raise EncoderConfigError(
                f"a projection needs a mean of shape (D,) and a matrix of shape (D, d), got "
                f"{tuple(mean.shape)} and {tuple(matrix.shape)}"
            )
        self.register_buffer("mean", mean.detach().to(torch.float32).clone())
        self.register_buffer("matrix", matrix.detach().to(torch.float32).clone())
        self.eigen_power = float(eigen_power)

    @property
    def in_dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.matrix.shape[1])

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors - self.mean) @ self.matrix

    def config(self) -> dict[str, Any]:
        return {"dim": self.out_dim, "eigen_power": self.eigen_power}

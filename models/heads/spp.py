"""Spatial pyramid pooling (He et al., 2014): average pooling over a 1x1, 2x2, … grid of the feature map.

The grid cells scale with the map, so any aspect ratio gives the same length (C x Σ level²), and the finer
levels keep a coarse layout that a global average throws away: "sky above, water below" differs from the
reverse. Each level is L2-normalised before concatenation, so the many cells of a fine level do not outweigh
the global one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from models.errors import EncoderConfigError
from models.heads.base import Head, register_head

__all__ = ["SpatialPyramid"]


@register_head("spp")
class SpatialPyramid(Head):
    def __init__(self, in_channels: int, levels: Sequence[int] = (1, 2)) -> None:
        super().__init__(in_channels)
        levels = tuple(int(level) for level in levels)
        if not levels or min(levels) < 1 or len(set(levels)) != len(levels):
            raise EncoderConfigError(f"SPP needs distinct grid sizes >= 1, e.g. levels=[1, 2], got {levels}")
        self.levels = levels

    @property
    def out_dim(self) -> int:
        return self.in_channels * sum(level * level for level in self.levels)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d also handles maps smaller than the grid (cells then share positions).
        parts = [
            F.normalize(F.adaptive_avg_pool2d(fmap, level).flatten(1), p=2.0, dim=1) for level in self.levels
        ]
        return torch.cat(parts, dim=1) / len(parts) ** 0.5

    def config(self) -> dict[str, Any]:
        return {"levels": list(self.levels)}

"""The test backbones, registered on import (tests/conftest.py imports this module for every test).

Tests of the app, the index and the encoder plumbing need a backbone that builds in milliseconds, needs no
weights file and gives the same vectors in every process; the product registry must not ship one.

- `tiny_random`: a seeded 3-layer conv net, the code path of any CNN. Its random filters see little but the
  mean brightness: different test pictures score 0.995-0.999 against each other, so it cannot tell a good
  ranking from a bad one.
- `cell_stats`: no learning at all, but it discriminates. The picture is cut into a 4x4 grid; each cell is
  described by its mean colour (3) and its mean signed and absolute gradients (4), and each cell's 7 numbers
  go through their own fixed, seeded projection to 32 channels: a (B, 32, 4, 4) map whose average (the GAP
  head) is a random projection of all 112 cell statistics. Distinct `image_bytes` pictures score from about
  -0.6 to 0.8 against each other, a re-saved or resized copy above 0.98, so fast tests can check the order
  and the scores of every hit. A real spatial map: box search (roi_align) pools part of it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models import register_backbone
from models.backbones import Backbone

TINY_CHANNELS = 16
STATS_GRID = 4
STATS_CHANNELS = 32
_STATS_PER_CELL = 7


@register_backbone("tiny_random")
def tiny_random(weights: Path | None) -> Backbone:
    """Stride-8 net with random but seeded weights; `weights` is ignored (there is nothing to load)."""
    with torch.random.fork_rng(devices=[]):  # seed locally: other tests' random streams stay untouched
        torch.manual_seed(0)
        module = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, TINY_CHANNELS, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
        )
    return Backbone(module=module, out_channels=TINY_CHANNELS, weights_id="random-seed0")


class CellStats(nn.Module):
    """(B, 3, H, W) ImageNet-normalised pixels -> (B, STATS_CHANNELS, 4, 4): projected per-cell statistics."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        shape = (STATS_GRID, STATS_GRID, _STATS_PER_CELL, STATS_CHANNELS)
        self.register_buffer("projection", torch.randn(shape, generator=generator) / _STATS_PER_CELL**0.5)
        # Gradients are ~10x smaller than normalised colours: scaled up so both kinds of statistic count.
        self.gradient_gain = 8.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        grey = x.mean(dim=1, keepdim=True)
        dx = F.pad(grey[..., :, 1:] - grey[..., :, :-1], (0, 1, 0, 0))
        dy = F.pad(grey[..., 1:, :] - grey[..., :-1, :], (0, 0, 0, 1))
        gradients = torch.cat([dx, dy, dx.abs(), dy.abs()], dim=1) * self.gradient_gain
        stats = F.adaptive_avg_pool2d(torch.cat([x, gradients], dim=1), STATS_GRID)
        stats[:, 5:] -= stats[:, 5:].mean(dim=(2, 3), keepdim=True)  # absolute gradients: contrast, centred
        projection: torch.Tensor = self.projection  # type: ignore[assignment]
        return torch.einsum("bsij,ijsc->bcij", stats, projection).contiguous()


@register_backbone("cell_stats")
def cell_stats(weights: Path | None) -> Backbone:
    """Fixed statistics per grid cell, fixed projection; `weights` is ignored (nothing is learned)."""
    return Backbone(module=CellStats(), out_channels=STATS_CHANNELS, weights_id="cells4-seed0")

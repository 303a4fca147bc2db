"""Global average pooling: the off-the-shelf baseline that the Corel-1K reference figure is measured with."""

from __future__ import annotations

import torch

from models.heads.base import Head, register_head


@register_head("gap")
class GAP(Head):
    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

"""Maximum activation of convolutions (Tolias et al., 2016): keeps the strongest local response per channel,
which favours small salient objects over the average scene."""

from __future__ import annotations

import torch

from models.heads.base import Head, register_head


@register_head("mac")
class MAC(Head):
    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.amax(dim=(2, 3))

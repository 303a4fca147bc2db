"""Generalised-mean pooling (Radenovic et al., 2018): p=1 is average pooling, p->inf is max pooling.

p is a Parameter so that a fine-tuned head can learn it; off the shelf, p=3 is the usual choice.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.errors import EncoderConfigError
from models.heads.base import Head, register_head


@register_head("gem")
class GeM(Head):
    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__(in_channels)
        if p <= 0 or eps <= 0:
            raise EncoderConfigError(f"GeM needs p > 0 and eps > 0, got p={p}, eps={eps}")
        self.p = nn.Parameter(torch.tensor([float(p)]))
        self.eps = eps  # the clamp keeps x**p defined for the zeros and negatives a feature map may hold

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        p = self.p.to(fmap.dtype)
        return fmap.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)

    def config(self) -> dict[str, Any]:
        return {"p": round(float(self.p.detach()), 6), "eps": self.eps}

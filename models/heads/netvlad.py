"""NetVLAD (Arandjelović et al., CVPR 2016): soft-assigned residuals of the local descriptors to K centroids.

Every position of the feature map is a local descriptor; a 1x1 convolution (w_k, b_k) and a softmax over the
K clusters give its soft assignment, and each cluster sums the assigned residuals (x - c_k) over all
positions. Intra-normalisation (each cluster's sum to unit length) keeps one bursty cluster from dominating;
the encoder L2-normalises the flattened KxC result.

The head is useless until its centroids are fitted on images like the user's: `cbir fit` runs k-means on
L2-normalised local descriptors and sets w_k = 2*alpha*c_k, b_k = -alpha*|c_k|^2 as the paper does, which
makes the softmax an assignment by distance to the centroids. Until then it holds seeded random centroids,
only good for tests, and an encoder refuses to run it (``fitted`` stays False).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import EncoderConfigError
from models.heads.base import Head, register_head

__all__ = ["NetVLAD"]

# Default number of clusters, chosen by measurement on Corel-1K (README, "Choosing a descriptor").
DEFAULT_CLUSTERS = 8


@register_head("netvlad")
class NetVLAD(Head):
    needs_fitting = True
    fitted: torch.Tensor

    def __init__(self, in_channels: int, clusters: int = DEFAULT_CLUSTERS) -> None:
        super().__init__(in_channels)
        if clusters < 1:
            raise EncoderConfigError(f"NetVLAD needs at least one cluster, got clusters={clusters}")
        self.clusters = clusters
        generator = torch.Generator().manual_seed(0)
        placeholder = F.normalize(torch.randn(clusters, in_channels, generator=generator), dim=1)
        self.centroids = nn.Parameter(placeholder)
        self.assign = nn.Conv2d(in_channels, clusters, kernel_size=1, bias=True)
        # A buffer, so that loading fitted parameters (a state dict) is what marks the head as fitted.
        self.register_buffer("fitted", torch.tensor(False))
        self.set_centroids(placeholder, alpha=50.0, fitted=False)

    @property
    def out_dim(self) -> int:
        return self.clusters * self.in_channels

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor, alpha: float, *, fitted: bool = True) -> None:
        """The paper's initialisation from k-means centroids: w_k = 2*alpha*c_k, b_k = -alpha*|c_k|^2."""
        if centroids.shape != (self.clusters, self.in_channels):
            raise EncoderConfigError(
                f"NetVLAD with {self.clusters} clusters of {self.in_channels} channels needs centroids of "
                f"shape ({self.clusters}, {self.in_channels}), got {tuple(centroids.shape)}"
            )
        centroids = centroids.to(self.centroids.dtype)
        self.centroids.copy_(centroids)
        self.assign.weight.copy_((2.0 * alpha * centroids)[:, :, None, None])
        bias = self.assign.bias
        assert bias is not None  # built with bias=True
        bias.copy_(-alpha * centroids.pow(2).sum(dim=1))
        self.fitted.fill_(fitted)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = F.normalize(fmap, p=2.0, dim=1)
        soft = F.softmax(self.assign(x), dim=1).flatten(2)  # (B, K, N)
        flat = x.flatten(2)  # (B, C, N)
        residuals = torch.einsum("bkn,bcn->bkc", soft, flat) - soft.sum(dim=2).unsqueeze(-1) * self.centroids
        return F.normalize(residuals, p=2.0, dim=2).flatten(1)

    def config(self) -> dict[str, Any]:
        return {"clusters": self.clusters}

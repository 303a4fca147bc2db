"""What a fitter is: the code that learns a pooling head's parameters from a user's feature maps.

Heads live in models/ and know nothing of how they are fitted (k-means runs on faiss, in app/); a head that
needs fitting (``Head.needs_fitting``) registers its fitter here under the head's own name, so `cbir fit`
finds it by name and a head without one is refused with the list of the fittable ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from models import EncoderConfigError
from models.heads import Head
from models.registry import Registry

__all__ = ["DEFAULT_ASSIGNMENT_RATIO", "FITTERS", "FitOptions", "HeadFit", "HeadFitter"]

# NetVLAD's r in alpha = ln(r) / mean(best - second best similarity to the centroids); see fitters/netvlad.py.
DEFAULT_ASSIGNMENT_RATIO = 1.5


@dataclass(frozen=True)
class FitOptions:
    clusters: int | None = None  # NetVLAD: K; None keeps the head's default
    projection_dim: int | None = None  # None: no projection
    eigen_power: float = -0.5  # -0.5 whitens, 0 is plain PCA
    assignment_ratio: float = DEFAULT_ASSIGNMENT_RATIO  # NetVLAD's softness (see fitters/netvlad.py)
    max_images: int = 1000
    descriptors_per_image: int = 50
    kmeans_iterations: int = 25
    seed: int = 0


@dataclass(frozen=True)
class HeadFit:
    """What a fitter reports of its work (for `cbir fit`'s summary)."""

    descriptors: int = 0
    clusters: int | None = None
    alpha: float | None = None


class HeadFitter(Protocol):
    def __call__(
        self,
        head: Head,
        maps: Sequence[Sequence[torch.Tensor]],
        options: FitOptions,
        rng: np.random.Generator,
        device: torch.device,
    ) -> HeadFit:
        """Fit ``head`` in place on per-image (1, C, h, w) feature maps at every scale."""
        ...


FITTERS: Registry[HeadFitter] = Registry("fitter", error=EncoderConfigError)

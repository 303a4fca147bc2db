"""NetVLAD's centroids, learned without labels: faiss k-means on local descriptors of the user's images.

The descriptors are L2-normalised feature-map positions sampled from the images; then w_k = 2*alpha*c_k,
b_k = -alpha*|c_k|^2 (Arandjelović et al.). alpha follows the rule of the reference PyTorch NetVLAD:
alpha = ln(r) / mean over the sample of (best - second best dot product of a descriptor with the
centroids). There r = 100, a sharp assignment, as the paper asks for; on Corel-1K a soft r = 1.5 measured
clearly better at every K (README, "Choosing a descriptor"), so 1.5 is the default
(`cbir fit --assignment-ratio`).
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from app.learn.fitters.base import DEFAULT_ASSIGNMENT_RATIO, FITTERS, FitOptions, HeadFit
from models.heads import Head
from models.heads.netvlad import NetVLAD

__all__ = ["fit_netvlad", "kmeans_centroids", "sample_descriptors"]


@FITTERS.register("netvlad")
def fit_netvlad(
    head: Head,
    maps: Sequence[Sequence[torch.Tensor]],
    options: FitOptions,
    rng: np.random.Generator,
    device: torch.device,
) -> HeadFit:
    assert isinstance(head, NetVLAD), f"the netvlad fitter was given head {head.name!r}"
    descriptors = sample_descriptors(maps, options.descriptors_per_image, rng)
    centroids, alpha = kmeans_centroids(
        descriptors,
        head.clusters,
        assignment_ratio=options.assignment_ratio,
        iterations=options.kmeans_iterations,
        seed=options.seed,
    )
    head.set_centroids(torch.from_numpy(centroids).to(device), alpha)
    return HeadFit(descriptors=len(descriptors), clusters=head.clusters, alpha=alpha)


def kmeans_centroids(
    descriptors: np.ndarray,
    clusters: int,
    *,
    assignment_ratio: float = DEFAULT_ASSIGNMENT_RATIO,
    iterations: int = 25,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """(K, C) k-means centroids of L2-normalised descriptors and NetVLAD's alpha for them (see above)."""
    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if assignment_ratio <= 1:
        raise ValueError(
            f"the assignment ratio must be above 1 (1 would ignore the centroids), got {assignment_ratio}"
        )
    if len(data) < clusters:
        raise ValueError(
            f"k-means with {clusters} clusters needs at least as many descriptors, got {len(data)}: fit on "
            "more images or ask for fewer clusters"
        )
    # Best of a few random starts: one start can settle with two centroids in one cluster and none in another.
    kmeans = faiss.Kmeans(
        data.shape[1], clusters, niter=iterations, nredo=3, seed=seed, max_points_per_centroid=4096
    )
    kmeans.train(data)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    if clusters == 1:
        return centroids, 1.0  # one cluster: the softmax is 1 whatever alpha is
    sample = data[np.random.default_rng(seed).permutation(len(data))[:20_000]]
    dots = -np.sort(-(sample @ centroids.T), axis=1)
    gap = float(np.mean(dots[:, 0] - dots[:, 1]))
    return centroids, float(np.log(assignment_ratio) / max(gap, 1e-6))


def sample_descriptors(
    maps: Sequence[Sequence[torch.Tensor]], per_image: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to `per_image` L2-normalised positions from each image, spread over its scales."""
    rows: list[np.ndarray] = []
    for per_scale in maps:
        local = torch.cat([F.normalize(fmap.float()[0].flatten(1).T, p=2.0, dim=1) for fmap in per_scale])
        pick = rng.permutation(len(local))[:per_image]
        rows.append(local[torch.from_numpy(np.sort(pick))].numpy())
    return np.concatenate(rows)

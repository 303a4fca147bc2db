"""`cbir fit`: learn an encoder's parameters from a user's images, without labels.

Two things can be learned, each optional:

- NetVLAD's centroids: faiss k-means on L2-normalised local descriptors (feature-map positions) sampled from
  the images, then w_k = 2*alpha*c_k, b_k = -alpha*|c_k|^2 (Arandjelović et al.). alpha follows the rule of
  the reference PyTorch NetVLAD: alpha = ln(r) / mean over the sample of (best - second best dot product
  of a descriptor with the centroids). There r = 100, a sharp assignment, as the paper asks for; on
  Corel-1K a soft r = 1.5 measured clearly better at every K (README, "Choosing a descriptor"), so 1.5 is
  the default (`cbir fit --assignment-ratio`).
- A projection of the pooled descriptors: PCA to a given dimension, optionally whitened (faiss PCAMatrix
  with eigen-power -0.5 for full whitening, 0 for plain PCA).

The images are read once: each one's feature maps are kept (float16) until both fits are done, so the
memory held is about max_images x positions x channels x 2 bytes (~0.3 GB for 1,000 photos at 320 px).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from app.config import Settings
from app.files.decoding import Skipped
from app.jobs.reader import load_files
from app.jobs.records import ImageRecord
from models import EncoderConfigError, build_encoder, to_tensor
from models.encoder import Encoder, parse_scales
from models.fitted import FittedParameters, save_fitted
from models.heads import Head
from models.heads.netvlad import NetVLAD
from models.projection import Projection

__all__ = [
    "FitOptions",
    "FitReport",
    "fit_encoder",
    "fit_parameters",
    "kmeans_centroids",
    "learn_projection",
    "parameters_of",
    "stored_image_paths",
]

# r in alpha = ln(r) / mean(best - second best similarity to the centroids); see the module docstring.
DEFAULT_ASSIGNMENT_RATIO = 1.5


@dataclass(frozen=True)
class FitOptions:
    clusters: int | None = None  # NetVLAD: K; None keeps the head's default
    projection_dim: int | None = None  # None: no projection
    eigen_power: float = -0.5  # -0.5 whitens, 0 is plain PCA
    assignment_ratio: float = DEFAULT_ASSIGNMENT_RATIO  # NetVLAD's softness (see the module docstring)
    max_images: int = 1000
    descriptors_per_image: int = 50
    kmeans_iterations: int = 25
    seed: int = 0


@dataclass
class FitReport:
    path: Path
    file_id: str
    images: int
    skipped: list[Skipped] = field(default_factory=list)
    descriptors: int = 0
    clusters: int | None = None
    alpha: float | None = None
    projection: str | None = None
    seconds: float = 0.0


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


def learn_projection(vectors: np.ndarray, dim: int, eigen_power: float) -> Projection:
    """PCA (eigen_power 0) or PCA-whitening (-0.5) of (N, D) vectors to `dim` dimensions, via faiss."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d_in = data.shape
    if not 1 <= dim <= d_in:
        raise ValueError(
            f"the projection dimension must be between 1 and {d_in} (the descriptor's), got {dim}"
        )
    if dim >= n:
        raise ValueError(
            f"learning a {dim}-d projection needs more than {dim} images, got {n}: ask for fewer dimensions "
            "or fit on a larger folder (e.g. a reference collection)"
        )
    pca = faiss.PCAMatrix(d_in, dim, eigen_power)
    pca.train(data)
    matrix = faiss.vector_to_array(pca.A).reshape(dim, d_in).T
    mean = faiss.vector_to_array(pca.mean)
    return Projection(
        torch.from_numpy(mean.copy()), torch.from_numpy(np.ascontiguousarray(matrix)), eigen_power
    )


def fit_encoder(
    settings: Settings,
    paths: Sequence[Path],
    out: Path,
    options: FitOptions,
    *,
    source: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> FitReport:
    """Fit what the configured head and options ask for on (a seeded sample of) `paths`; write `out`."""
    started = time.perf_counter()
    encoder = build_encoder(
        settings.backbone,
        settings.head,
        weights=settings.weights,
        max_side=settings.max_side,
        device=settings.device,
        batch_size=settings.batch_size,
        head_options={"clusters": options.clusters} if options.clusters else None,
        scales=parse_scales(settings.scales),
        require_fitted=False,
    )
    _check_fittable(encoder, options)
    rng = np.random.default_rng(options.seed)
    chosen = sorted(rng.permutation(len(paths))[: options.max_images].tolist())
    sample = [paths[i] for i in chosen]
    maps, skipped = _feature_maps(encoder, sample, settings, on_progress)
    if not maps:
        raise ValueError(f"no readable image among the {len(sample)} sampled from {source}")
    report = FitReport(path=out, file_id="", images=len(maps), skipped=skipped)
    params = fit_parameters(encoder, maps, options, source=source, report=report)
    report.file_id = save_fitted(params, out)
    report.seconds = time.perf_counter() - started
    return report


def fit_parameters(
    encoder: Encoder,
    maps: Sequence[Sequence[torch.Tensor]],
    options: FitOptions,
    *,
    source: str,
    report: FitReport | None = None,
) -> FittedParameters:
    """Fit the encoder's head (in place) and projection on per-image feature maps (Encoder.feature_maps).

    Separate from reading images so that bench/quality.py fits exactly as `cbir fit` does on the maps it
    has already computed.
    """
    _check_fittable(encoder, options)
    head = encoder.head
    rng = np.random.default_rng(options.seed)
    if isinstance(head, NetVLAD):
        descriptors = _sample_descriptors(maps, options.descriptors_per_image, rng)
        centroids, alpha = kmeans_centroids(
            descriptors,
            head.clusters,
            assignment_ratio=options.assignment_ratio,
            iterations=options.kmeans_iterations,
            seed=options.seed,
        )
        head.set_centroids(torch.from_numpy(centroids).to(encoder.device), alpha)
        if report is not None:
            report.descriptors, report.clusters, report.alpha = len(descriptors), head.clusters, alpha

    projection = None
    if options.projection_dim is not None:
        vectors = np.concatenate([encoder.pool_maps(per_scale, project=False) for per_scale in maps])
        projection = learn_projection(vectors, options.projection_dim, options.eigen_power)
        if report is not None:
            report.projection = f"{projection.out_dim}-d, eigen-power {options.eigen_power:g}"

    return parameters_of(
        encoder,
        head,
        projection,
        with_state=head.needs_fitting,
        fitted_on={
            "source": source,
            "images": len(maps),
            "descriptors_per_image": options.descriptors_per_image,
            "assignment_ratio": options.assignment_ratio,
            "seed": options.seed,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def parameters_of(
    encoder: Encoder,
    head: Head,
    projection: Projection | None,
    *,
    with_state: bool,
    fitted_on: dict[str, Any],
) -> FittedParameters:
    """The file's contents for ``head`` and ``projection`` learned on ``encoder``'s feature maps."""
    return FittedParameters(
        backbone=encoder.backbone_name,
        weights_id=encoder.weights_id,
        head=head.name,
        head_config=head.config(),
        max_side=encoder.max_side,
        scales=list(encoder.scales),
        head_state={key: value.detach().cpu() for key, value in head.state_dict().items()}
        if with_state
        else {},
        projection=projection,
        fitted_on=fitted_on,
    )


def _check_fittable(encoder: Encoder, options: FitOptions) -> None:
    head = encoder.head
    if not head.needs_fitting and options.projection_dim is None:
        raise EncoderConfigError(
            f"nothing to fit: head {head.name!r} has no learned parameters; ask for a projection "
            "(--dim N) or use a head that needs fitting (--head netvlad)"
        )
    if head.needs_fitting and not isinstance(head, NetVLAD):
        raise EncoderConfigError(f"`cbir fit` does not know how to fit head {head.name!r}")


def _feature_maps(
    encoder: Encoder,
    paths: Sequence[Path],
    settings: Settings,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[list[list[torch.Tensor]], list[Skipped]]:
    """Per readable image, its (1, C, h, w) float16 maps at every scale, in input order."""
    maps: list[list[torch.Tensor]] = []
    skipped: list[Skipped] = []
    loaded = load_files(
        paths, max_side=encoder.max_side, max_pixels=settings.max_pixels, workers=settings.workers
    )
    for done, item in enumerate(loaded, 1):
        if isinstance(item, Skipped):
            skipped.append(item)
        else:
            assert isinstance(item, ImageRecord)
            batch = to_tensor(item.decoded.image, encoder.max_side)[None]
            maps.append([fmap.to("cpu", torch.float16) for fmap in encoder.feature_maps(batch)])
        if on_progress is not None:
            on_progress(done, len(maps))
    return maps, skipped


def _sample_descriptors(
    maps: Sequence[Sequence[torch.Tensor]], per_image: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to `per_image` L2-normalised positions from each image, spread over its scales."""
    rows: list[np.ndarray] = []
    for per_scale in maps:
        local = torch.cat([F.normalize(fmap.float()[0].flatten(1).T, p=2.0, dim=1) for fmap in per_scale])
        pick = rng.permutation(len(local))[:per_image]
        rows.append(local[torch.from_numpy(np.sort(pick))].numpy())
    return np.concatenate(rows)


def stored_image_paths(settings: Settings) -> list[Path]:
    """Files of the images stored in the collection at settings (its own copies, else the indexed paths)."""
    from sqlalchemy import select

    from app.db.session import open_database
    from app.db.tables import Image
    from app.files.locate import path_to_read
    from app.files.storage import FileStore

    with open_database(settings.db_url, upgrade=False) as db, db.sessions() as session:
        rows = session.execute(select(Image.sha256, Image.format, Image.source_path).order_by(Image.id)).all()
    files = FileStore(settings.images_dir)
    return [path_to_read(files, sha256, fmt, source_path) for sha256, fmt, source_path in rows]

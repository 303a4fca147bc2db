"""`cbir fit`: learn an encoder's parameters from a user's images, without labels.

Two things can be learned, each optional:

- The head's own parameters, when it has some to learn (``Head.needs_fitting``): by the fitter registered
  under the head's name in app/learn/fitters/ (NetVLAD's centroids: k-means, see fitters/netvlad.py).
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

from app.config import Settings
from app.files.decoding import Skipped
from app.jobs.records import ImageRecord
from app.learn.embedding import Reading, embed_files
from app.learn.fitters import DEFAULT_ASSIGNMENT_RATIO, FITTERS, FitOptions
from app.learn.fitters.netvlad import kmeans_centroids
from models import EncoderConfigError, build_encoder, to_tensor
from models.encoder import Encoder, parse_scales
from models.fitted import FittedParameters, save_fitted
from models.heads import Head
from models.projection import Projection

__all__ = [
    "DEFAULT_ASSIGNMENT_RATIO",
    "FitOptions",
    "FitReport",
    "fit_encoder",
    "fit_parameters",
    "kmeans_centroids",
    "learn_projection",
    "parameters_of",
    "stored_image_paths",
]


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
    if head.needs_fitting:
        fitted = FITTERS.get(head.name)(head, maps, options, rng, encoder.device)
        if report is not None:
            report.descriptors, report.clusters, report.alpha = (
                fitted.descriptors,
                fitted.clusters,
                fitted.alpha,
            )

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
    if head.needs_fitting and head.name not in FITTERS:
        raise EncoderConfigError(
            f"`cbir fit` does not know how to fit head {head.name!r}; it fits: {', '.join(FITTERS.names())} "
            "(a fitter registers in app/learn/fitters/)"
        )


def _feature_maps(
    encoder: Encoder,
    paths: Sequence[Path],
    settings: Settings,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[list[list[torch.Tensor]], list[Skipped]]:
    """Per readable image, its (1, C, h, w) float16 maps at every scale, in input order."""

    def maps_of(pictures: list[ImageRecord]) -> list[torch.Tensor]:
        [picture] = pictures
        batch = to_tensor(picture.decoded.image, encoder.max_side)[None]
        return [fmap.to("cpu", torch.float16) for fmap in encoder.feature_maps(batch)]

    reading = Reading()
    maps = [
        embedded.output
        for embedded in embed_files(
            paths,
            maps_of,
            max_side=encoder.max_side,
            max_pixels=settings.max_pixels,
            workers=settings.workers,
            reading=reading,
            on_progress=on_progress,
        )
    ]
    return maps, reading.skipped


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

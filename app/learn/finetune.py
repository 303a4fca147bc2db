"""`cbir finetune`: fine-tune the configured encoder's head on a user's pictures, contrastively.

Self-supervised by default: two augmented views of one picture are positives, the other pictures of the
batch negatives; folder names are never read. With ``classes`` (class folders the user vouches for) the
pictures of one folder are positives too: supervised contrastive training.

Each sampled picture is decoded as the bulk job decodes it, then cut into ``views`` random views
(resized crop, flip, colour jitter, greyscale: the SimCLR recipe without blur) of ``crop`` x ``crop``
pixels; the backbone runs once per view (on the GPU when present) and the training in
models/training/contrastive.py reuses those feature maps every epoch. The result is a file of fitted
parameters like `cbir fit`'s: the trained head, and, when the encoder had a projection, one learned
again (same dimension and whitening) on the fine-tuned descriptors, since the old one was learned for
the old head. It is learned on the descriptors of each picture's first view (a crop), which are already
computed, not of the whole picture as served: learning it on whole pictures costs one more forward pass a
picture and measured no better (Corel-1K, NetVLAD K=8 with PCA 512, self-supervised: mAP 0.9071 on the
crops, 0.9056 on the whole pictures). Its new file id changes the encoder fingerprint, so a collection
built before asks for `cbir reindex`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from app.config import Settings
from app.encoders import encoder_from_settings
from app.files.decoding import Skipped
from app.jobs.records import ImageRecord
from app.learn.embedding import Reading, embed_files
from app.learn.fit import learn_projection, parameters_of
from models import EncoderConfigError
from models.encoder import Encoder
from models.fitted import load_fitted, save_fitted
from models.preprocess import normalise_pixels, pixels_from_image
from models.training import EpochReport
from models.training.autoencoder import StepCallback
from models.training.contrastive import ContrastiveConfig, HeadTrainResult, pool_views, train_head

__all__ = ["FinetuneOptions", "FinetuneReport", "checkpoint_path", "finetune_encoder"]


@dataclass(frozen=True)
class FinetuneOptions:
    classes: bool = False  # supervised: a picture's folder names its class
    views: int = 4  # augmented views per picture, computed once
    crop: int = 224  # side of a view, in pixels
    max_images: int = 1000
    training: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def __post_init__(self) -> None:
        if self.views < 2:
            raise ValueError(f"contrastive training needs at least 2 views of each picture, got {self.views}")
        if self.crop < 32:
            raise ValueError(f"the crop must be at least 32 pixels (the backbone's stride), got {self.crop}")
        if self.max_images < 4:
            raise ValueError(f"fine-tuning needs at least 4 pictures, got max_images={self.max_images}")


@dataclass
class FinetuneReport:
    path: Path
    file_id: str
    started_from: str
    training: HeadTrainResult
    classes: int | None  # None: self-supervised
    skipped: list[Skipped]
    projection: str | None


def checkpoint_path(out: Path) -> Path:
    """Where the resumable training state of a run writing ``out`` lives."""
    return out.with_name(out.name + ".ckpt")


def finetune_encoder(
    settings: Settings,
    paths: Sequence[Path],
    out: Path,
    options: FinetuneOptions,
    *,
    source: str,
    resume: bool = False,
    on_read: Callable[[int, int], None] | None = None,
    on_step: StepCallback | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> FinetuneReport:
    """Fine-tune the head of the encoder that ``settings`` configure on a seeded sample of ``paths``."""
    checkpoint = checkpoint_path(out)
    if not resume and (out.exists() or checkpoint.exists()):
        raise ValueError(
            f"{out if out.exists() else checkpoint} already exists: pass --resume to continue that run, or "
            "choose another --out"
        )
    encoder = encoder_from_settings(settings)
    if not isinstance(encoder, Encoder):
        raise EncoderConfigError(
            "an autoencoder (--encoder dae:...) is trained with `cbir train autoencoder`"
        )
    head = copy.deepcopy(encoder.head)
    if not any(True for _ in head.parameters()):
        raise EncoderConfigError(
            f"head {settings.head!r} has nothing to learn: fine-tune --head netvlad (after `cbir fit`) or "
            "--head gem"
        )
    rng = np.random.default_rng(options.training.seed)
    chosen = sorted(rng.permutation(len(paths))[: options.max_images].tolist())
    sample = [paths[i] for i in chosen]
    views, groups, digests, skipped = _views(encoder, sample, settings, options, on_read)
    if len(digests) < 4:
        raise ValueError(
            f"{len(digests)} readable pictures among the {len(sample)} sampled: fine-tuning needs 4"
        )
    classes = None
    if options.classes:
        classes = int(groups.max()) + 1
        if classes < 2:
            raise ValueError("--classes needs pictures in at least two folders (one folder per class)")
    data_id = hashlib.sha256(
        "\n".join(f"{d} {int(g)}" for d, g in zip(digests, groups, strict=True)).encode()
    )
    result = train_head(
        head,
        views,
        groups,
        options.training,
        checkpoint,
        started_from=encoder.fingerprint,
        data_id=data_id.hexdigest()[:16] + f"/{options.views}x{options.crop}",
        device=encoder.device,
        resume=resume,
        on_step=on_step,
        on_epoch=on_epoch,
    )
    if result.stop_reason == "already finished" and out.exists():
        # Rewriting the same parameters would give the file a new id (its date), hence a new fingerprint.
        return FinetuneReport(
            out, load_fitted(out).file_id, encoder.fingerprint, result, classes, skipped, None
        )
    projection, described = None, None
    old = encoder.projection
    if old is not None:
        with torch.no_grad():
            pooled = [
                pool_views(head, [scale[start : start + 256, 0].to(encoder.device) for scale in views]).cpu()
                for start in range(0, len(digests), 256)
            ]
        projection = learn_projection(torch.cat(pooled).numpy(), old.out_dim, old.eigen_power)
        described = f"{projection.out_dim}-d, eigen-power {old.eigen_power:g}, learned again"
    params = parameters_of(
        encoder,
        head,
        projection,
        with_state=True,
        fitted_on={
            "source": source,
            "images": len(digests),
            "finetuned": {
                "started_from": encoder.fingerprint,
                "supervised": options.classes,
                "views": options.views,
                "crop": options.crop,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                **options.training.as_dict(),
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    file_id = save_fitted(params, out)
    return FinetuneReport(
        path=out,
        file_id=file_id,
        started_from=encoder.fingerprint,
        training=result,
        classes=classes,
        skipped=skipped,
        projection=described,
    )


def augmentation(crop: int) -> v2.Compose:
    """SimCLR's augmentations (Chen et al. 2020) without the blur, on uint8 (3, H, W) pictures."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(crop, scale=(0.25, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    )


def _views(
    encoder: Encoder,
    paths: Sequence[Path],
    settings: Settings,
    options: FinetuneOptions,
    on_read: Callable[[int, int], None] | None,
) -> tuple[list[torch.Tensor], torch.Tensor, list[str], list[Skipped]]:
    """Per scale, (pictures, views, C, h, w) float16 feature maps of seeded augmented views; each picture's
    group (its index, or its folder's); the pictures' sha256; the files that could not be read."""
    augment = augmentation(options.crop)
    folders: dict[Path, int] = {}

    def views_of(pictures: list[ImageRecord]) -> list[torch.Tensor]:
        """Per scale, (pictures x views, C, h, w) float16 feature maps of the pictures' augmented views."""
        pixels = [pixels_from_image(picture.decoded.image, encoder.max_side) for picture in pictures]
        batch = normalise_pixels(torch.stack([augment(p) for p in pixels for _ in range(options.views)]))
        return [fmap.to("cpu", torch.float16) for fmap in encoder.feature_maps(batch)]

    per_view: list[list[torch.Tensor]] = [[] for _ in encoder.scales]
    groups: list[int] = []
    digests: list[str] = []
    reading = Reading()
    with torch.random.fork_rng(devices=[]):  # seeded views without touching the caller's random stream
        torch.manual_seed(options.training.seed)
        for embedded in embed_files(
            paths,
            views_of,
            max_side=encoder.max_side,
            max_pixels=settings.max_pixels,
            workers=settings.workers,
            batch_size=-(-encoder.batch_size // options.views),  # pictures whose views fill a batch
            distinct=True,  # an identical file would be its own negative
            reading=reading,
            on_progress=on_read,
        ):
            for store, fmap in zip(per_view, embedded.output, strict=True):
                store.append(fmap)
            for position, picture in zip(embedded.positions, embedded.pictures, strict=True):
                digests.append(picture.sha256)
                groups.append(
                    folders.setdefault(paths[position].parent, len(folders))
                    if options.classes
                    else len(groups)
                )
    views = (
        [torch.cat(store).unflatten(0, (len(digests), options.views)) for store in per_view]
        if digests
        else []
    )
    return views, torch.tensor(groups, dtype=torch.long), digests, reading.skipped

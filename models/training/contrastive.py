"""Fine-tuning a pooling head contrastively: views of one picture (or pictures of one class) pull together.

The loss is the supervised-contrastive loss of Khosla et al. (NeurIPS 2020). Each descriptor in a batch is
an anchor; its positives are the other descriptors of its group, everything else in the batch is a
negative. With one group per picture (two augmented views of it) this is SimCLR's NT-Xent (Chen et al.,
ICML 2020), the self-supervised case; with one group per class folder it is the supervised case.

Only the head learns (NetVLAD's centroids and assignment conv, GeM's p); the backbone stays as shipped.
That is a choice of cost: with the backbone frozen, each view's feature map is computed once, before
training, and every epoch reuses it, so an epoch costs a few milliseconds of pooling per picture instead
of a forward and a backward pass through the backbone (about 3 forwards on a CPU).

The run is seeded, held-out validation (views fixed once) picks the best epoch and stops early, and after
every epoch a checkpoint is rewritten atomically with everything needed to continue exactly where it
stopped. It records the fingerprint of the encoder the run started from and an id of its pictures, and
resuming with another encoder or other pictures is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.autoencoder import write_checkpoint
from models.errors import EncoderConfigError
from models.training.autoencoder import StepCallback
from models.training.epochs import EpochLedger, EpochReport

__all__ = ["CHECKPOINT_FORMAT", "ContrastiveConfig", "HeadTrainResult", "contrastive_loss", "train_head"]

CHECKPOINT_FORMAT = "cbir-head-finetune/1"


@dataclass(frozen=True)
class ContrastiveConfig:
    epochs: int = 20
    batch_size: int = 64  # pictures per step, two views each
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 0.1
    validation: float = 0.1  # fraction of the pictures held out; 0 trains on all and never stops early
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"the batch needs at least 2 pictures (one is a negative), got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning rate must be between 0 and 1, got {self.learning_rate}")
        if self.weight_decay < 0:
            problems.append(f"weight decay must be at least 0, got {self.weight_decay}")
        if not 0 < self.temperature <= 10:
            problems.append(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0 <= self.validation < 0.9:
            problems.append(f"validation fraction must be from 0 to 0.9, got {self.validation}")
        if self.patience < 1:
            problems.append(f"patience must be at least 1 epoch, got {self.patience}")
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeadTrainResult:
    state: dict[str, torch.Tensor]  # the best epoch's head parameters
    epochs_run: int
    best_epoch: int
    best_val_loss: float | None
    first_val_loss: float | None  # the head as it started, on the same validation views
    seconds: float
    stop_reason: str  # "epochs", "early stopping" or "already finished"
    pictures: int
    validation_pictures: int


def contrastive_loss(descriptors: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over anchors with a positive of -mean log p(positive | anchor), softmax over the rest of the
    batch.

    ``descriptors`` (N, D) are L2-normalised, ``groups`` (N,) says which rows belong together.
    """
    n = len(descriptors)
    eye = torch.eye(n, dtype=torch.bool, device=descriptors.device)
    similarity = (descriptors @ descriptors.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = similarity.log_softmax(dim=1)
    positives = (groups[:, None] == groups[None, :]) & ~eye
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not bool(anchors.any()):
        raise ValueError("no descriptor in the batch has a positive: each group needs two rows or more")
    per_anchor = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(per_anchor[anchors] / counts[anchors]).mean()


def pool_views(head: nn.Module, maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """What the Encoder computes before its projection: L2(Σ over scales of L2(head(map)))."""
    total = sum(F.normalize(head(fmap.float()), p=2.0, dim=1) for fmap in maps)
    assert isinstance(total, torch.Tensor)
    return F.normalize(total, p=2.0, dim=1)


def train_head(
    head: nn.Module,
    views: Sequence[torch.Tensor],
    groups: torch.Tensor,
    config: ContrastiveConfig,
    checkpoint: Path,
    *,
    started_from: str,
    data_id: str,
    device: torch.device,
    resume: bool = False,
    on_step: StepCallback | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> HeadTrainResult:
    """Train ``head`` in place on precomputed feature maps and leave the best epoch's state in it.

    ``views`` holds one tensor per scale, (pictures, views per picture, C, h, w); ``groups`` (pictures,)
    names each picture's group (its own index when self-supervised, its class otherwise).
    """
    pictures, per_picture = int(views[0].shape[0]), int(views[0].shape[1])
    if per_picture < 2:
        raise ValueError(f"contrastive training needs at least 2 views of each picture, got {per_picture}")
    if any(v.shape[:2] != views[0].shape[:2] for v in views) or len(groups) != pictures:
        raise ValueError("every scale's views and the groups must cover the same pictures")
    trainable = [p for p in head.parameters()]
    if not trainable:
        raise EncoderConfigError(f"head {type(head).__name__} has no parameter to fine-tune")
    n_val = round(pictures * config.validation) if config.validation else 0
    n_train = pictures - n_val
    if n_train < 2 or (n_val and n_val < 2):
        raise ValueError(
            f"{pictures} pictures are too few to fine-tune on ({n_val} held out for validation): give more"
        )
    order = torch.randperm(pictures, generator=torch.Generator().manual_seed(config.seed))
    train_ids, val_ids = order[:n_train], order[n_train:]
    batch = min(config.batch_size, n_train)
    steps = max(1, n_train // batch)  # full batches only: a batch of one picture has no negative
    head.to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    # Validation compares views 0 and 1 of each held-out picture, the same ones at every epoch.
    val_batches = [val_ids[s : s + batch] for s in range(0, n_val, batch) if n_val - s >= 2]

    def validation_loss() -> float | None:
        if not val_batches:
            return None
        head.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for ids in val_batches:
                pair = torch.tensor([0, 1]).expand(len(ids), 2)
                total += float(_batch_loss(head, views, groups, ids, pair, config, device)) * len(ids)
                count += len(ids)
        return total / count

    state = _RunState()
    if resume:
        state = _restore(checkpoint, config, started_from, data_id, head, optimizer, scheduler, generator)
        if state.finished:
            head.load_state_dict(state.best)
            return _result(state, pictures, n_val, "already finished")
    else:
        state.first_val_loss = validation_loss()
        state.best = _copy_state(head)
        state.best_loss = state.first_val_loss

    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        head.train()
        permutation = train_ids[torch.randperm(n_train, generator=generator)]
        total = 0.0
        for step in range(1, steps + 1):
            ids = permutation[(step - 1) * batch : step * batch]
            # Two distinct views of each picture: a random first, and a random other one.
            first = torch.randint(per_picture, (len(ids),), generator=generator)
            second = (first + torch.randint(1, per_picture, (len(ids),), generator=generator)) % per_picture
            loss = _batch_loss(head, views, groups, ids, torch.stack([first, second], dim=1), config, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            if on_step is not None:
                on_step(epoch, step, steps, total / step)
        train_loss = total / steps
        val_loss = validation_loss()
        report = state.close_epoch(
            epoch, config.epochs, train_loss, val_loss, patience=config.patience, started=started
        )
        if report.improved:
            state.best = _copy_state(head)
        _save(checkpoint, config, started_from, data_id, state, head, optimizer, scheduler, generator)
        if on_epoch is not None:
            on_epoch(report)
        if state.finished:
            break
    head.load_state_dict(state.best)
    head.eval().requires_grad_(False)
    return _result(state, pictures, n_val, state.stop_reason)


def _batch_loss(
    head: nn.Module,
    views: Sequence[torch.Tensor],
    groups: torch.Tensor,
    ids: torch.Tensor,
    chosen: torch.Tensor,
    config: ContrastiveConfig,
    device: torch.device,
) -> torch.Tensor:
    """Loss of pictures ``ids`` with views ``chosen`` (len(ids), 2): the two views of one picture are rows
    i and len(ids) + i, so every picture has its own view as a positive whatever its group."""
    maps = [
        torch.cat([scale[ids, chosen[:, 0]], scale[ids, chosen[:, 1]]]).to(device, non_blocking=True)
        for scale in views
    ]
    labels = groups[ids].to(device)
    return contrastive_loss(pool_views(head, maps), torch.cat([labels, labels]), config.temperature)


@dataclass
class _RunState(EpochLedger):
    first_val_loss: float | None = None
    best: dict[str, torch.Tensor] = field(default_factory=dict)


def _copy_state(head: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in head.state_dict().items()}


def _save(
    path: Path,
    config: ContrastiveConfig,
    started_from: str,
    data_id: str,
    state: _RunState,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> None:
    write_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "started_from": started_from,
            "data_id": data_id,
            "config": config.as_dict(),
            "state": asdict(state),
            "head": _copy_state(head),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
        },
    )


def _restore(
    path: Path,
    config: ContrastiveConfig,
    started_from: str,
    data_id: str,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> _RunState:
    if not path.is_file():
        raise FileNotFoundError(f"--resume given but there is no checkpoint at {path}: drop --resume")
    try:
        # weights_only: a checkpoint is data, and loading it must never run code from the file.
        saved: Mapping[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a readable fine-tuning checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a fine-tuning checkpoint written by `cbir finetune`")
    if saved["started_from"] != started_from:
        raise EncoderConfigError(
            f"{path} fine-tunes encoder {saved['started_from']}, configured {started_from}: configure the "
            "encoder it started from, or start a new run without --resume"
        )
    if saved["config"] != config.as_dict():
        raise ValueError(
            f"{path} was trained with {saved['config']}, not {config.as_dict()}: resume with the same "
            "settings, or start a new run without --resume"
        )
    if saved["data_id"] != data_id:
        raise ValueError(
            f"{path} was trained on other pictures than these: resume on the same folder, or start a new run"
        )
    head.load_state_dict(saved["head"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    generator.set_state(saved["generator"])
    return _RunState(**saved["state"])


def _result(state: _RunState, pictures: int, n_val: int, reason: str) -> HeadTrainResult:
    return HeadTrainResult(
        state=state.best,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        best_val_loss=state.best_loss,
        first_val_loss=state.first_val_loss,
        seconds=state.seconds,
        stop_reason=reason,
        pictures=pictures,
        validation_pictures=n_val,
    )

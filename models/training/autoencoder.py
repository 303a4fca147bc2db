"""Training a denoising autoencoder on a set of pictures: no labels, seeded, resumable, early-stopped.

The input is corrupted (models/training/noise.py) and the loss is the mean squared error between the
network's output and the clean picture. A held-out validation split, corrupted once with a fixed seed so its
loss is comparable from epoch to epoch, decides which weights are kept (the best) and when to stop.

After every epoch the checkpoint file is rewritten atomically with two parts: the best weights and their
fingerprint (what `load_autoencoder` serves), and everything needed to continue exactly where the run stopped
(last weights, optimizer, schedule, random generator, early-stopping counters). Resuming an interrupted run
gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.autoencoder import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    AutoencoderConfig,
    ConvAutoencoder,
    fingerprint_of,
    read_checkpoint,
    write_checkpoint,
)
from models.encoder import resolve_device
from models.training.epochs import EpochLedger, EpochReport
from models.training.noise import NoiseConfig, corrupt

__all__ = ["EpochReport", "StepCallback", "TrainConfig", "TrainResult", "train_autoencoder"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation: float = 0.1  # fraction of the pictures held out; 0 trains on all and never stops early
    patience: int = 5  # epochs without a better validation loss before stopping
    seed: int = 0
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch size must be at least 2 (batch norm needs two), got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning rate must be between 0 and 1, got {self.learning_rate}")
        if self.weight_decay < 0:
            problems.append(f"weight decay must be at least 0, got {self.weight_decay}")
        if not 0 <= self.validation < 0.9:
            problems.append(f"validation fraction must be from 0 to 0.9, got {self.validation}")
        if self.patience < 1:
            problems.append(f"patience must be at least 1 epoch, got {self.patience}")
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        values = dict(values)
        noise = NoiseConfig(**values.pop("noise", {}))
        return cls(noise=noise, **values)


@dataclass(frozen=True)
class TrainResult:
    path: Path
    fingerprint: str
    epochs_run: int
    best_epoch: int
    best_val_loss: float | None
    seconds: float  # training time over all runs of this checkpoint
    stop_reason: str  # "epochs", "early stopping", or "already finished"
    images: int
    validation_images: int


# (epoch, step within the epoch, steps per epoch, running mean of the training loss)
StepCallback = Callable[[int, int, int, float], None]


def train_autoencoder(
    images: torch.Tensor,
    model_config: AutoencoderConfig,
    train_config: TrainConfig,
    out: Path,
    *,
    device: str = "auto",
    resume: bool = False,
    on_step: StepCallback | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train on ``images`` ((N, channels, size, size) uint8) and save to ``out`` after every epoch.

    With ``resume`` the run stored in ``out`` goes on; its configuration and pictures must be the ones given
    (compared by value and by a hash of the pixels), otherwise resuming would silently train something else.
    """
    expected = (model_config.channels, model_config.input_size, model_config.input_size)
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"expected (N, {expected[0]}, {expected[1]}, {expected[2]}) uint8 pictures, "
            f"got {images.dtype} of shape {tuple(images.shape)}"
        )
    n_val = round(len(images) * train_config.validation) if train_config.validation else 0
    n_val = max(n_val, 1) if train_config.validation else 0
    n_train = len(images) - n_val
    if n_train < 2:
        raise ValueError(
            f"{len(images)} pictures are too few to train on ({n_val} held out for validation): give more"
        )
    data_digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
    torch_device = resolve_device(device)
    cuda = torch_device.type == "cuda"

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's stream
        torch.manual_seed(train_config.seed)
        model = ConvAutoencoder(model_config)
    model.to(torch_device)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(train_config.seed))
    train_images = images[order[:n_train]].to(torch_device)
    val_images = images[order[n_train:]].to(torch_device)
    # Full batches only, except a last batch of 2 or more: batch norm cannot train on a single picture.
    starts = [s for s in range(0, n_train, train_config.batch_size) if n_train - s >= 2]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    # One-cycle: a short warm-up then a long decay; robust to the learning rate, which nobody should tune.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train_config.learning_rate, total_steps=train_config.epochs * len(starts)
    )
    generator = torch.Generator().manual_seed(train_config.seed + 1)
    # The validation inputs are corrupted once, so its loss measures the model and not the draw of noise.
    val_inputs = _corrupted(val_images, train_config.noise, train_config.seed + 2)

    state = _RunState()
    if resume:
        state = _restore(out, model_config, train_config, data_digest, model, optimizer, scheduler, generator)
        if state.finished:
            return _result(out, state, len(images), n_val, "already finished")

    for epoch in range(state.epoch + 1, train_config.epochs + 1):
        started = time.perf_counter()
        model.train()
        permutation = torch.randperm(n_train, generator=generator).to(torch_device)
        total, seen = 0.0, 0
        for step, start in enumerate(starts, 1):
            clean = train_images[permutation[start : start + train_config.batch_size]].float() / 255.0
            noisy = corrupt(clean, train_config.noise, generator)
            with torch.autocast("cuda", torch.bfloat16, enabled=cuda):
                logits = model(noisy)
            loss = F.mse_loss(torch.sigmoid(logits.float()), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(clean)
            seen += len(clean)
            if on_step is not None:
                on_step(epoch, step, len(starts), total / seen)
        train_loss = total / seen
        val_loss = _validation_loss(model, val_inputs, val_images, train_config.batch_size, cuda)
        report = state.close_epoch(
            epoch, train_config.epochs, train_loss, val_loss, patience=train_config.patience, started=started
        )
        if report.improved:
            state.best_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        _save(
            out,
            model_config,
            train_config,
            state,
            model,
            optimizer,
            scheduler,
            generator,
            data_digest,
            len(images),
            n_val,
        )
        if on_epoch is not None:
            on_epoch(report)
        if state.finished:
            break
    return _result(out, state, len(images), n_val, state.stop_reason)


@dataclass
class _RunState(EpochLedger):
    best_model: dict[str, torch.Tensor] = field(default_factory=dict)
    fingerprint: str = ""


def _corrupted(images: torch.Tensor, noise: NoiseConfig, seed: int) -> torch.Tensor:
    if not len(images):
        return images.float()
    return corrupt(images.float() / 255.0, noise, torch.Generator().manual_seed(seed))


@torch.no_grad()
def _validation_loss(
    model: ConvAutoencoder, inputs: torch.Tensor, images: torch.Tensor, batch_size: int, cuda: bool
) -> float | None:
    if not len(images):
        return None
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        clean = images[start : start + batch_size].float() / 255.0
        with torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            logits = model(inputs[start : start + batch_size])
        total += float(F.mse_loss(torch.sigmoid(logits.float()), clean, reduction="sum"))
    return total / images[0].numel() / len(images)


def _save(
    out: Path,
    model_config: AutoencoderConfig,
    train_config: TrainConfig,
    state: _RunState,
    model: ConvAutoencoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    data_digest: str,
    n_images: int,
    n_val: int,
) -> None:
    state.fingerprint = fingerprint_of(model_config, state.best_model)
    write_checkpoint(
        out,
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": model_config.as_dict(),
            "model": state.best_model,
            "fingerprint": state.fingerprint,
            "training": {
                "images": n_images,
                "epochs_run": state.epoch,
                "best_epoch": state.best_epoch,
                "best_val_loss": state.best_loss,
                "validation_images": n_val,
                "seconds": round(state.seconds, 1),
                "finished": state.finished,
                "stop_reason": state.stop_reason,
                **train_config.as_dict(),
            },
            "resume": {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "epoch": state.epoch,
                "best_loss": state.best_loss,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "history": state.history,
                "seconds": state.seconds,
                "finished": state.finished,
                "stop_reason": state.stop_reason,
                "train_config": train_config.as_dict(),
                "data_sha256": data_digest,
            },
        },
    )


def _restore(
    out: Path,
    model_config: AutoencoderConfig,
    train_config: TrainConfig,
    data_digest: str,
    model: ConvAutoencoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> _RunState:
    payload = read_checkpoint(out)
    saved = payload.get("resume")
    if not isinstance(saved, dict):
        raise ValueError(f"{out} holds no training state to resume from; train to a new file instead")
    stored_model = AutoencoderConfig.from_dict(payload["config"])
    stored_train = TrainConfig.from_dict(saved["train_config"])
    if stored_model != model_config or stored_train != train_config:
        raise ValueError(
            f"{out} was trained with {stored_model} and {stored_train}, "
            f"not {model_config} and {train_config}: resume with the same settings, or train to a new file"
        )
    if saved["data_sha256"] != data_digest:
        raise ValueError(
            f"{out} was trained on other pictures than these (the pixels differ): resume on the same folder, "
            "or train to a new file"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    generator.set_state(saved["generator"])
    return _RunState(
        epoch=int(saved["epoch"]),
        best_loss=saved["best_loss"],
        best_epoch=int(saved["best_epoch"]),
        bad_epochs=int(saved["bad_epochs"]),
        best_model=dict(payload["model"]),
        history=list(saved["history"]),
        seconds=float(saved["seconds"]),
        finished=bool(saved["finished"]),
        stop_reason=str(saved["stop_reason"]),
        fingerprint=str(payload["fingerprint"]),
    )


def _result(out: Path, state: _RunState, images: int, n_val: int, reason: str) -> TrainResult:
    return TrainResult(
        path=out,
        fingerprint=state.fingerprint,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        best_val_loss=state.best_loss,
        seconds=state.seconds,
        stop_reason=reason,
        images=images,
        validation_images=n_val,
    )

"""Contrastive head training: the loss's value, learning, keeping the best epoch, exact resumption."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models import EncoderConfigError
from models.heads import build_head
from models.training import EpochReport
from models.training.contrastive import (
    ContrastiveConfig,
    HeadTrainResult,
    contrastive_loss,
    train_head,
)


class Interrupted(Exception):
    pass


def test_the_loss_is_nt_xent_for_pairs_and_counts_every_positive_of_a_class() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    pairs = torch.stack([a, a, b, b])
    tau = 0.5
    # Anchor a: its twin at 1/tau, two others at 0 -> -log(e^(1/tau) / (e^(1/tau) + 2)).
    expected = math.log(1 + 2 * math.exp(-1 / tau))
    loss = contrastive_loss(pairs, torch.tensor([0, 0, 1, 1]), tau)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    swapped = contrastive_loss(pairs, torch.tensor([0, 1, 0, 1]), tau)
    assert float(swapped) > float(loss)
    # One class of four: each anchor has three positives and no negative, so p = 1/3 for each.
    together = contrastive_loss(pairs, torch.tensor([0, 0, 0, 0]), tau)
    assert float(together) > 0
    with pytest.raises(ValueError, match="no descriptor in the batch has a positive"):
        contrastive_loss(pairs, torch.tensor([0, 1, 2, 3]), tau)


def views_of_prototypes(pictures: int = 40, per_picture: int = 3, seed: int = 0) -> torch.Tensor:
    """(pictures, views, 8, 4, 4) maps: each picture a random pattern, each view it plus strong noise."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(pictures, 1, 8, 4, 4, generator=generator)
    noise = torch.rand(pictures, per_picture, 8, 4, 4, generator=generator)
    return (base + 1.5 * noise).to(torch.float16)


def netvlad(seed: int = 0) -> torch.nn.Module:
    head = build_head("netvlad", 8, clusters=2)
    centroids = torch.nn.functional.normalize(
        torch.rand(2, 8, generator=torch.Generator().manual_seed(seed)), dim=1
    )
    head.set_centroids(centroids, alpha=2.0)  # type: ignore[operator]
    return head


def config(**kwargs: object) -> ContrastiveConfig:
    values: dict[str, object] = {"epochs": 4, "batch_size": 8, "learning_rate": 0.05, "validation": 0.2}
    return ContrastiveConfig(**{**values, **kwargs})  # type: ignore[arg-type]


def test_training_lowers_the_held_out_loss_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    head = netvlad()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    reports: list[EpochReport] = []
    result = train(head, tmp_path / "run.ckpt", settings=config(epochs=6), on_epoch=reports.append)
    assert result.first_val_loss is not None and result.best_val_loss is not None
    assert result.best_val_loss < result.first_val_loss
    assert [r.epoch for r in reports] == list(range(1, 7)) and result.pictures == 40
    assert result.validation_pictures == 8
    best = min(reports, key=lambda r: r.val_loss or 0.0)
    assert result.best_epoch == best.epoch and result.best_val_loss == best.val_loss
    assert all(torch.equal(head.state_dict()[k], result.state[k]) for k in result.state)
    assert not torch.equal(head.state_dict()["centroids"], before["centroids"])
    assert not any(p.requires_grad for p in head.parameters())


def train(
    head: torch.nn.Module,
    path: Path,
    *,
    views: list[torch.Tensor] | None = None,
    groups: torch.Tensor | None = None,
    settings: ContrastiveConfig | None = None,
    started_from: str = "a",
    data_id: str = "d",
    resume: bool = False,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> HeadTrainResult:
    """train_head on 40 prototype pictures (one scale) unless told otherwise."""
    views = views if views is not None else [views_of_prototypes()]
    return train_head(
        head,
        views,
        groups if groups is not None else torch.arange(len(views[0])),
        settings or config(),
        path,
        started_from=started_from,
        data_id=data_id,
        device=torch.device("cpu"),
        resume=resume,
        on_epoch=on_epoch,
    )


def test_an_interrupted_run_resumes_to_the_same_head(tmp_path: Path) -> None:
    views = [views_of_prototypes(), views_of_prototypes(seed=1)[:, :, :, :2, :2]]  # two scales
    whole = netvlad()
    train(whole, tmp_path / "whole.ckpt", views=views)

    def stop_after_two(report: EpochReport) -> None:
        if report.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(netvlad(), tmp_path / "cut.ckpt", views=views, on_epoch=stop_after_two)
    resumed = netvlad()
    epochs: list[EpochReport] = []
    result = train(resumed, tmp_path / "cut.ckpt", views=views, resume=True, on_epoch=epochs.append)
    assert [r.epoch for r in epochs] == [3, 4] and result.epochs_run == 4
    for key, value in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key
    again = train(netvlad(), tmp_path / "cut.ckpt", views=views, resume=True)
    assert again.stop_reason == "already finished"


def test_resuming_with_another_encoder_pictures_or_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    train(netvlad(), path, settings=config(epochs=1))
    with pytest.raises(EncoderConfigError, match="fine-tunes encoder a, configured b"):
        train(netvlad(), path, settings=config(epochs=1), started_from="b", resume=True)
    with pytest.raises(ValueError, match="other pictures"):
        train(netvlad(), path, settings=config(epochs=1), data_id="e", resume=True)
    with pytest.raises(ValueError, match="same settings"):
        train(netvlad(), path, settings=config(epochs=2), resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(netvlad(), tmp_path / "none", resume=True)


def test_a_head_without_parameters_or_too_few_pictures_is_refused(tmp_path: Path) -> None:
    views = views_of_prototypes()
    with pytest.raises(EncoderConfigError, match="no parameter to fine-tune"):
        train(build_head("gap", 8), tmp_path / "x")
    with pytest.raises(ValueError, match="too few"):
        train(netvlad(), tmp_path / "x", views=[views[:3]])
    with pytest.raises(ValueError, match="at least 2 views"):
        train(netvlad(), tmp_path / "x", views=[views[:, :1]])

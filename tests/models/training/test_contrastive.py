"""Contrastive head training: the loss's value, learning, keeping the best epoch, exact resumption."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models import EncoderConfigError
from models.heads import build_head
from models.training import EpochReport
from models.training.contrastive import ContrastiveConfig, contrastive_loss, train_head


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
    views = [views_of_prototypes()]
    head = netvlad()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    reports: list[EpochReport] = []
    result = train_head(
        head,
        views,
        torch.arange(40),
        config(epochs=6),
        tmp_path / "run.ckpt",
        started_from="enc-a",
        data_id="pictures",
        device=torch.device("cpu"),
        on_epoch=reports.append,
    )
    assert result.first_val_loss is not None and result.best_val_loss is not None
    assert result.best_val_loss < result.first_val_loss
    assert [r.epoch for r in reports] == list(range(1, 7)) and result.pictures == 40
    assert result.validation_pictures == 8
    best = min(reports, key=lambda r: r.val_loss or 0.0)
    assert result.best_epoch == best.epoch and result.best_val_loss == best.val_loss
    assert all(torch.equal(head.state_dict()[k], result.state[k]) for k in result.state)
    assert not torch.equal(head.state_dict()["centroids"], before["centroids"])
    assert not any(p.requires_grad for p in head.parameters())


def test_an_interrupted_run_resumes_to_the_same_head(tmp_path: Path) -> None:
    views = [views_of_prototypes(), views_of_prototypes(seed=1)[:, :, :, :2, :2]]  # two scales
    groups = torch.arange(40)
    common = {"started_from": "enc-a", "data_id": "pictures", "device": torch.device("cpu")}
    whole = netvlad()
    train_head(whole, views, groups, config(), tmp_path / "whole.ckpt", **common)  # type: ignore[arg-type]

    def stop_after_two(report: EpochReport) -> None:
        if report.epoch == 2:
            raise Interrupted

    cut = netvlad()
    with pytest.raises(Interrupted):
        train_head(cut, views, groups, config(), tmp_path / "cut.ckpt", on_epoch=stop_after_two, **common)  # type: ignore[arg-type]
    resumed = netvlad()
    epochs: list[EpochReport] = []
    result = train_head(
        resumed,
        views,
        groups,
        config(),
        tmp_path / "cut.ckpt",
        resume=True,
        on_epoch=epochs.append,
        **common,  # type: ignore[arg-type]
    )
    assert [r.epoch for r in epochs] == [3, 4] and result.epochs_run == 4
    for key, value in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key
    again = train_head(netvlad(), views, groups, config(), tmp_path / "cut.ckpt", resume=True, **common)  # type: ignore[arg-type]
    assert again.stop_reason == "already finished"


def test_resuming_with_another_encoder_pictures_or_settings_is_refused(tmp_path: Path) -> None:
    views, groups = [views_of_prototypes()], torch.arange(40)
    path = tmp_path / "run.ckpt"
    train_head(
        netvlad(),
        views,
        groups,
        config(epochs=1),
        path,
        started_from="a",
        data_id="d",
        device=torch.device("cpu"),
    )
    cpu = torch.device("cpu")
    with pytest.raises(EncoderConfigError, match="fine-tunes encoder a, configured b"):
        train_head(
            netvlad(),
            views,
            groups,
            config(epochs=1),
            path,
            started_from="b",
            data_id="d",
            device=cpu,
            resume=True,
        )
    with pytest.raises(ValueError, match="other pictures"):
        train_head(
            netvlad(),
            views,
            groups,
            config(epochs=1),
            path,
            started_from="a",
            data_id="e",
            device=cpu,
            resume=True,
        )
    with pytest.raises(ValueError, match="same settings"):
        train_head(
            netvlad(),
            views,
            groups,
            config(epochs=2),
            path,
            started_from="a",
            data_id="d",
            device=cpu,
            resume=True,
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_head(
            netvlad(),
            views,
            groups,
            config(),
            tmp_path / "none",
            started_from="a",
            data_id="d",
            device=cpu,
            resume=True,
        )


def test_a_head_without_parameters_or_too_few_pictures_is_refused(tmp_path: Path) -> None:
    views, cpu = [views_of_prototypes()], torch.device("cpu")
    with pytest.raises(EncoderConfigError, match="no parameter to fine-tune"):
        train_head(
            build_head("gap", 8),
            views,
            torch.arange(40),
            config(),
            tmp_path / "x",
            started_from="a",
            data_id="d",
            device=cpu,
        )
    with pytest.raises(ValueError, match="too few"):
        train_head(
            netvlad(),
            [views[0][:3]],
            torch.arange(3),
            config(),
            tmp_path / "x",
            started_from="a",
            data_id="d",
            device=cpu,
        )
    with pytest.raises(ValueError, match="at least 2 views"):
        train_head(
            netvlad(),
            [views[0][:, :1]],
            torch.arange(40),
            config(),
            tmp_path / "x",
            started_from="a",
            data_id="d",
            device=cpu,
        )

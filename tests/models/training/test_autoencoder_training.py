"""Training: it learns, is deterministic with a seed, keeps the best epoch, stops early, resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import load_autoencoder
from models.autoencoder import read_checkpoint
from models.training import EpochReport, NoiseConfig, train_autoencoder
from tests.helpers.dae import TINY, blobs, tiny_training, train_tiny


class Interrupted(Exception):
    pass


def test_loss_goes_down_and_the_best_epoch_is_saved(tmp_path: Path) -> None:
    reports: list[EpochReport] = []
    result = train_autoencoder(
        blobs(32), TINY, tiny_training(4), tmp_path / "m.pt", device="cpu", on_epoch=reports.append
    )
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert reports[-1].train_loss < reports[0].train_loss
    best = min(reports, key=lambda r: r.val_loss or 0.0)
    assert result.best_epoch == best.epoch and result.best_val_loss == best.val_loss
    assert result.images == 32 and result.validation_images == 3 and result.stop_reason == "epochs"
    encoder = load_autoencoder(tmp_path / "m.pt", device="cpu")
    assert encoder.fingerprint == result.fingerprint
    assert encoder.training["best_epoch"] == best.epoch and encoder.training["finished"] is True


def test_same_seed_same_model_other_seed_other_model(tmp_path: Path) -> None:
    first = train_tiny(tmp_path / "a.pt", seed=3)
    again = train_tiny(tmp_path / "b.pt", seed=3)
    other = train_tiny(tmp_path / "c.pt", seed=4)
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint


def test_training_leaves_the_callers_random_stream_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_tiny(tmp_path / "m.pt")
    assert torch.equal(torch.rand(3), expected)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = train_autoencoder(blobs(32), TINY, tiny_training(3), tmp_path / "straight.pt", device="cpu")

    def stop_after_first(report: EpochReport) -> None:
        if report.epoch == 1:
            raise Interrupted

    path = tmp_path / "resumed.pt"
    with pytest.raises(Interrupted):
        train_autoencoder(blobs(32), TINY, tiny_training(3), path, device="cpu", on_epoch=stop_after_first)
    assert read_checkpoint(path)["resume"]["epoch"] == 1
    resumed = train_autoencoder(blobs(32), TINY, tiny_training(3), path, device="cpu", resume=True)
    assert resumed.epochs_run == 3
    assert resumed.fingerprint == straight.fingerprint
    last_straight = read_checkpoint(tmp_path / "straight.pt")["resume"]["model"]
    last_resumed = read_checkpoint(path)["resume"]["model"]
    assert all(torch.equal(last_straight[k], last_resumed[k]) for k in last_straight)
    again = train_autoencoder(blobs(32), TINY, tiny_training(3), path, device="cpu", resume=True)
    assert again.stop_reason == "already finished" and again.fingerprint == straight.fingerprint


def test_resume_refuses_other_settings_or_other_pictures(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    train_tiny(path)
    with pytest.raises(ValueError, match="resume with the same settings"):
        train_autoencoder(blobs(32), TINY, tiny_training(2), path, device="cpu", resume=True)
    with pytest.raises(ValueError, match="other pictures"):
        train_autoencoder(blobs(32, seed=9), TINY, tiny_training(1), path, device="cpu", resume=True)


def test_early_stopping_when_validation_stops_improving(tmp_path: Path) -> None:
    # Every input pixel masked: the best the network can do is the mean picture, learned within an epoch or
    # two, after which the validation loss cannot keep improving.
    config = tiny_training(
        30, noise=NoiseConfig("masking", 1.0, jitter=0.0), patience=1, learning_rate=0.05, validation=0.25
    )
    reports: list[EpochReport] = []
    result = train_autoencoder(
        blobs(32), TINY, config, tmp_path / "m.pt", device="cpu", on_epoch=reports.append
    )
    assert result.stop_reason == "early stopping"
    assert result.epochs_run == len(reports) < 30
    assert not reports[-1].improved


def test_bad_input_is_refused_with_the_expected_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\) uint8"):
        train_autoencoder(blobs(8).float(), TINY, tiny_training(), tmp_path / "m.pt", device="cpu")
    with pytest.raises(ValueError, match="too few"):
        train_autoencoder(blobs(2), TINY, tiny_training(), tmp_path / "m.pt", device="cpu")
    with pytest.raises(ValueError, match="batch size"):
        tiny_training(batch_size=1)

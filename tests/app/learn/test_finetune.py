"""`cbir finetune`: a fitted head trained on a folder's pictures becomes a new, loadable encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.config import Settings
from app.files.decoding import list_files
from app.learn.finetune import FinetuneOptions, checkpoint_path, finetune_encoder
from app.learn.fit import FitOptions, fit_encoder
from models import EncoderConfigError, build_encoder
from models.fitted import load_fitted
from models.training.contrastive import ContrastiveConfig
from tests.helpers.images import image_bytes
from tests.helpers.settings import tiny_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No database is involved: one run, not one per database."""
    return tiny_settings(tmp_path)


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    root = tmp_path / "classes"
    for label in range(2):
        (root / f"class{label}").mkdir(parents=True)
        for seed in range(6):
            (root / f"class{label}" / f"{seed}.jpg").write_bytes(image_bytes(100 * label + seed))
    (root / "class0" / "notes.txt").write_text("not an image")
    return root


def options(validation: float = 0.2, **kwargs: object) -> FinetuneOptions:
    training = ContrastiveConfig(epochs=2, batch_size=4, learning_rate=0.01, validation=validation)
    return FinetuneOptions(views=3, crop=48, training=training, **kwargs)  # type: ignore[arg-type]


def encoder_of(settings: Settings, fitted: Path) -> object:
    return build_encoder(
        settings.backbone, settings.head, max_side=settings.max_side, device="cpu", fitted=fitted
    )


def test_a_fitted_netvlad_with_a_projection_is_fine_tuned_into_a_new_encoder(
    settings: Settings, classes: Path
) -> None:
    netvlad = settings.model_copy(update={"head": "netvlad"})
    paths = list_files(classes)
    start = classes.parent / "fitted.safetensors"
    fit_encoder(netvlad, paths, start, FitOptions(clusters=2, projection_dim=6), source="photos")
    netvlad = netvlad.model_copy(update={"fitted": start})
    out = classes.parent / "tuned.safetensors"
    read: list[tuple[int, int]] = []
    # No validation: the last epoch is kept, so the head must have moved.
    report = finetune_encoder(
        netvlad, paths, out, options(0.0), source="photos", on_read=lambda *a: read.append(a)
    )
    assert read[-1] == (13, 12) and len(report.skipped) == 1 and report.classes is None
    assert report.training.pictures == 12 and report.training.epochs_run == 2
    assert report.projection == "6-d, eigen-power -0.5, learned again"
    before, after = encoder_of(netvlad, start), encoder_of(netvlad, out)
    assert report.started_from == before.fingerprint != after.fingerprint  # type: ignore[attr-defined]
    assert after.dim == 6  # type: ignore[attr-defined]
    stored = load_fitted(out)
    assert stored.fitted_on["finetuned"]["started_from"] == before.fingerprint  # type: ignore[attr-defined]
    assert stored.fitted_on["finetuned"]["supervised"] is False
    assert not torch.equal(stored.head_state["centroids"], load_fitted(start).head_state["centroids"])
    assert checkpoint_path(out).exists()
    with pytest.raises(ValueError, match="already exists: pass --resume"):
        finetune_encoder(netvlad, paths, out, options(0.0), source="photos")
    again = finetune_encoder(netvlad, paths, out, options(0.0), source="photos", resume=True)
    assert again.training.stop_reason == "already finished" and again.file_id == report.file_id
    assert torch.equal(load_fitted(out).head_state["centroids"], stored.head_state["centroids"])


def test_class_folders_make_a_supervised_run_of_gem(settings: Settings, classes: Path) -> None:
    gem = settings.model_copy(update={"head": "gem"})
    out = classes.parent / "gem.safetensors"
    report = finetune_encoder(gem, list_files(classes), out, options(classes=True), source="photos")
    assert report.classes == 2
    stored = load_fitted(out)
    assert stored.head == "gem" and stored.fitted_on["finetuned"]["supervised"] is True
    encoder = encoder_of(gem, out)
    assert encoder.describe()["head_config"]["p"] == stored.head_config["p"]  # type: ignore[attr-defined]


def test_what_cannot_be_fine_tuned_is_refused_with_the_fix(settings: Settings, classes: Path) -> None:
    paths = list_files(classes)
    with pytest.raises(EncoderConfigError, match="nothing to learn: fine-tune --head netvlad"):
        finetune_encoder(settings, paths, classes.parent / "a", options(), source="photos")
    netvlad = settings.model_copy(update={"head": "netvlad"})
    with pytest.raises(EncoderConfigError, match="run `cbir fit"):
        finetune_encoder(netvlad, paths, classes.parent / "b", options(), source="photos")
    gem = settings.model_copy(update={"head": "gem"})
    with pytest.raises(ValueError, match="at least two folders"):
        finetune_encoder(
            gem, list_files(classes / "class1"), classes.parent / "c", options(classes=True), source="x"
        )
    with pytest.raises(ValueError, match="at least 2 views"):
        FinetuneOptions(views=1)

"""Which encoder the settings name: the one place that turns configuration into an Encoder."""

from __future__ import annotations

from app.config import Settings
from models import Encoder, build_encoder


def encoder_from_settings(settings: Settings) -> Encoder:
    return build_encoder(
        settings.backbone,
        settings.head,
        weights=settings.weights,
        max_side=settings.max_side,
        device=settings.device,
        batch_size=settings.batch_size,
    )

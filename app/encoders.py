"""Which encoder the settings name: the one place that turns configuration into an Encoder."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from models import EncoderConfigError, ImageEncoder, build_encoder, load_autoencoder
from models.encoder import parse_scales

DAE_PREFIX = "dae:"


def encoder_from_settings(settings: Settings) -> ImageEncoder:
    """``encoder = dae:PATH`` serves a trained autoencoder; unset, the backbone and head settings apply."""
    spec = (settings.encoder or "").strip()
    if spec.startswith(DAE_PREFIX) and spec[len(DAE_PREFIX) :].strip():
        path = Path(spec[len(DAE_PREFIX) :].strip()).expanduser()
        return load_autoencoder(path, device=settings.device, batch_size=settings.batch_size)
    if spec and spec != "backbone":
        raise EncoderConfigError(
            f"unknown encoder {spec!r}: use dae:/path/to/model.pt for an autoencoder trained with "
            "`cbir train autoencoder`, or leave CBIR_ENCODER / --encoder unset for the backbone settings"
        )
    return build_encoder(
        settings.backbone,
        settings.head,
        weights=settings.weights,
        max_side=settings.max_side,
        device=settings.device,
        batch_size=settings.batch_size,
        scales=parse_scales(settings.scales),
        fitted=settings.fitted,
        compile_model=settings.compile,
    )

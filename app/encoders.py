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
        if settings.runtime not in ("auto", "torch"):
            raise EncoderConfigError(
                f"the autoencoder runs with torch only, not CBIR_RUNTIME={settings.runtime}: "
                "use auto or torch"
            )
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
        runtime="torch" if settings.compile and settings.runtime == "auto" else settings.runtime,
        runtime_cache=settings.runtime_cache_dir,
        threads=settings.inference_threads,
    )

"""Which encoder the settings name: the one place that turns configuration into an Encoder.

``CBIR_ENCODER`` names an encoder kind, ``KIND`` or ``KIND:ARGUMENT``: unset or ``backbone``, the backbone
and head settings; ``dae:PATH``, an autoencoder trained with `cbir train autoencoder`. Kinds are registered
here (models/registry.py), so the settings' validation, the error for an unknown kind and the building all
read one table; a new kind is one ``ENCODER_KINDS.add`` line. This module imports no torch until an encoder
is built: app/config.py normalises the setting through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import EncoderConfigError
from models.registry import Registry

if TYPE_CHECKING:
    from app.config import Settings
    from models import ImageEncoder

__all__ = ["BACKBONE_KIND", "ENCODER_KINDS", "EncoderKind", "encoder_from_settings", "normalise_encoder"]

BACKBONE_KIND = "backbone"


@dataclass(frozen=True)
class EncoderKind:
    """How one kind of encoder is named in the settings and built from them."""

    usage: str  # how the setting is written, for messages: "dae:/path/to/model.pt"
    what: str  # what it serves, for messages: "an autoencoder trained with `cbir train autoencoder`"
    build: Callable[[str, Settings], ImageEncoder]  # (argument, settings) -> encoder
    takes_argument: bool = False
    # The argument as recorded (the collection rebuilds its encoder from the setting: see app/collection).
    normalise: Callable[[str], str] = str.strip


def _usages() -> str:
    return ", or ".join(f"{kind.usage} for {kind.what}" for kind in ENCODER_KINDS.values())


class _UnknownEncoder(EncoderConfigError):
    def __init__(self, message: str) -> None:
        super().__init__(f"{message}: use {_usages()}")


ENCODER_KINDS: Registry[EncoderKind] = Registry(
    "encoder kind", unknown="unknown encoder {name!r}", error=_UnknownEncoder
)


def _parse(value: str | None) -> tuple[str, str]:
    """(kind name, argument) of a setting; unset is the backbone kind."""
    spec = (value or "").strip()
    if not spec:
        return BACKBONE_KIND, ""
    name, _, argument = spec.partition(":")
    return name.strip(), argument.strip()


def _kind_of(value: str | None) -> tuple[EncoderKind, str]:
    name, argument = _parse(value)
    kind = ENCODER_KINDS.get(name) if name in ENCODER_KINDS else None
    if kind is None or kind.takes_argument != bool(argument):
        raise _UnknownEncoder(f"unknown encoder {(value or '').strip()!r}")
    return kind, argument


def normalise_encoder(value: str | None) -> str | None:
    """The setting as the collection records it (a checkpoint path made absolute); anything not a known kind
    is kept as written, so the error that names it comes when the encoder is built."""
    name, argument = _parse(value)
    kind = ENCODER_KINDS.get(name) if name in ENCODER_KINDS else None
    if value is None or kind is None or not kind.takes_argument or not argument:
        return value
    return f"{name}:{kind.normalise(argument)}"


def encoder_from_settings(settings: Settings) -> ImageEncoder:
    """The encoder ``settings.encoder`` names, built with the device, batch and runtime settings."""
    kind, argument = _kind_of(settings.encoder)
    return kind.build(argument, settings)


def _backbone_and_head(_: str, settings: Settings) -> ImageEncoder:
    from models import build_encoder
    from models.encoder import parse_scales

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


def _autoencoder(path: str, settings: Settings) -> ImageEncoder:
    from models import load_autoencoder

    if settings.runtime not in ("auto", "torch"):
        raise EncoderConfigError(
            f"the autoencoder runs with torch only, not CBIR_RUNTIME={settings.runtime}: use auto or torch"
        )
    return load_autoencoder(Path(path).expanduser(), device=settings.device, batch_size=settings.batch_size)


def _absolute_path(path: str) -> str:
    # A relative checkpoint path would name another file, or none, in a process started elsewhere.
    return str(Path(path.strip()).expanduser().resolve())


ENCODER_KINDS.add(
    "dae",
    EncoderKind(
        usage="dae:/path/to/model.pt",
        what="an autoencoder trained with `cbir train autoencoder`",
        build=_autoencoder,
        takes_argument=True,
        normalise=_absolute_path,
    ),
)
ENCODER_KINDS.add(
    BACKBONE_KIND,
    EncoderKind(
        usage="backbone (or CBIR_ENCODER / --encoder unset)",
        what="the backbone and head settings",
        build=_backbone_and_head,
    ),
)

"""Networks and image preprocessing: image bytes in, float32 vectors out. No HTTP, FAISS or SQL here.

The names below load on first use (PEP 562): ``import models.registry`` or ``models.defaults`` must not pay
for torch (2 s), because the CLI's configuration imports them and `cbir --help` needs no network
(tests/app/test_cli_startup.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.autoencoder import AutoencoderEncoder, load_autoencoder
    from models.backbones import Backbone, available_backbones, build_backbone, register_backbone
    from models.encoder import Encoder, build_encoder
    from models.errors import EncoderConfigError, ImageDecodeError, ImageTooLargeError
    from models.heads import Head, available_heads, build_head, register_head
    from models.preprocess import PREPROCESS_VERSION, DecodedImage, decode_image, to_tensor
    from models.protocols import ImageEncoder

_HOMES = {
    "models.autoencoder": ("AutoencoderEncoder", "load_autoencoder"),
    "models.backbones": ("Backbone", "available_backbones", "build_backbone", "register_backbone"),
    "models.encoder": ("Encoder", "build_encoder"),
    "models.errors": ("EncoderConfigError", "ImageDecodeError", "ImageTooLargeError"),
    "models.heads": ("Head", "available_heads", "build_head", "register_head"),
    "models.preprocess": ("PREPROCESS_VERSION", "DecodedImage", "decode_image", "to_tensor"),
    "models.protocols": ("ImageEncoder",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "PREPROCESS_VERSION",
    "AutoencoderEncoder",
    "Backbone",
    "DecodedImage",
    "Encoder",
    "EncoderConfigError",
    "Head",
    "ImageDecodeError",
    "ImageEncoder",
    "ImageTooLargeError",
    "available_backbones",
    "available_heads",
    "build_backbone",
    "build_encoder",
    "build_head",
    "decode_image",
    "load_autoencoder",
    "register_backbone",
    "register_head",
    "to_tensor",
]


def __getattr__(name: str) -> Any:
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

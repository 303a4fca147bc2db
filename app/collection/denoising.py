"""What the configured autoencoder rebuilds from a picture (`POST /denoise`, `cbir denoise`).

Showing the reconstruction is how a user judges whether a trained model learned their pictures: a blurry
average face where a shoe should be says the code cannot tell their images apart. Optional noise, added
before the model sees the picture, shows the denoising itself. The noise is seeded, so the same request
always gives the same picture.
"""

from __future__ import annotations

import io

import torch

from app.errors import InvalidNoiseError, NotAnAutoencoderError
from app.files.decoding import decode_or_raise
from models import ImageEncoder
from models.autoencoder import AutoencoderEncoder, tensor_to_image
from models.training import NOISE_KINDS, NoiseConfig, corrupt

HOW_TO_CONFIGURE = (
    "train one with `cbir train autoencoder DIR -o model.pt`, then start the service with "
    "CBIR_ENCODER=dae:model.pt (or --encoder dae:model.pt)"
)


def require_autoencoder(encoder: ImageEncoder) -> AutoencoderEncoder:
    if not isinstance(encoder, AutoencoderEncoder):
        raise NotAnAutoencoderError(
            f"the configured encoder ({encoder.fingerprint}) is a pretrained backbone, which cannot rebuild "
            f"pictures; denoising needs an autoencoder: {HOW_TO_CONFIGURE}"
        )
    return encoder


def noise_config(kind: str, strength: float) -> NoiseConfig | None:
    """The pixel noise a caller asked for (no geometric jitter: the output should line up with the input)."""
    if kind == "none":
        return None
    try:
        return NoiseConfig(kind=kind, strength=strength, jitter=0.0)
    except ValueError as exc:
        raise InvalidNoiseError(f"{exc} (noise kinds: {', '.join(NOISE_KINDS)})") from None


def denoise(
    encoder: AutoencoderEncoder, data: bytes, *, max_pixels: int, noise: NoiseConfig | None, seed: int = 0
) -> bytes:
    """Upload bytes -> PNG of the reconstruction, at the network's input size."""
    decoded = decode_or_raise(data, max_side=encoder.max_side, max_pixels=max_pixels)
    batch = encoder.prepare([decoded.image])
    if noise is not None:
        batch = corrupt(batch, noise, torch.Generator().manual_seed(seed))
    picture = tensor_to_image(encoder.reconstruct_tensors(batch)[0])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()

"""Convolutional denoising autoencoder whose bottleneck code is an image descriptor, and its checkpoint file.

Unlike the pretrained backbones, this network learns from the user's own images, without labels: it is
trained to rebuild clean pictures from corrupted ones (models/training/autoencoder.py), and the code it
squeezes them through is what gets indexed. It pays off where ImageNet features do not fit (digits, scans,
drawings, sensor images) and costs a training run; see the README for when to choose it.

A checkpoint names itself: its fingerprint is a hash of the configuration and every weight, so a collection
indexed with one trained model refuses vectors from another (the fingerprint also travels into each row).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.encoder import resolve_device
from models.errors import EncoderConfigError
from models.preprocess import resize_long_side

__all__ = [
    "CHECKPOINT_FORMAT",
    "DAE_PREPROCESS_VERSION",
    "AutoencoderConfig",
    "AutoencoderEncoder",
    "ConvAutoencoder",
    "fingerprint_of",
    "image_to_tensor",
    "load_autoencoder",
    "read_checkpoint",
    "tensor_to_image",
    "write_checkpoint",
]

CHECKPOINT_FORMAT: Final = "cbir-dae"
CHECKPOINT_VERSION: Final = 1
# Bump when image_to_tensor changes the pixels the network sees: it is part of the fingerprint.
DAE_PREPROCESS_VERSION: Final = 1

_MIN_SIDE, _MAX_SIDE = 16, 256
# The encoder halves the picture until it is at most this many pixels wide; the decoder mirrors it exactly.
_SMALLEST_MAP = 8
# The autoencoder is tiny next to a backbone: on CPU big batches amortise the per-call overhead.
_CPU_BATCH = 64
_CUDA_BATCH = 256


@dataclass(frozen=True)
class AutoencoderConfig:
    """The shape of a network: what it takes, how wide it is, how long its code is.

    28 x 28 grey suits digits and other line art; 64 to 128 px colour suits photos. ``width`` is the number
    of channels of the first block, doubled at every halving (at most 8x).
    """

    input_size: int = 28
    channels: int = 1
    code_size: int = 32
    width: int = 16

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise EncoderConfigError(f"channels must be 1 (grey) or 3 (colour), got {self.channels}")
        if not _MIN_SIDE <= self.input_size <= _MAX_SIDE:
            raise EncoderConfigError(
                f"input size must be {_MIN_SIDE} to {_MAX_SIDE} pixels, got {self.input_size}"
            )
        if self.sides()[-1] > _SMALLEST_MAP:
            raise EncoderConfigError(
                f"input size {self.input_size} cannot be halved down to {_SMALLEST_MAP} px or less; "
                "use a size such as 28, 32, 48, 64, 96 or 128"
            )
        if not 2 <= self.code_size <= 4096:
            raise EncoderConfigError(f"code size must be 2 to 4096, got {self.code_size}")
        if not 4 <= self.width <= 256:
            raise EncoderConfigError(f"width must be 4 to 256 channels, got {self.width}")

    def sides(self) -> list[int]:
        """Side of the feature map after each stage: 28 -> [28, 14, 7]; 64 -> [64, 32, 16, 8]."""
        sides = [self.input_size]
        while sides[-1] % 2 == 0 and sides[-1] > _SMALLEST_MAP:
            sides.append(sides[-1] // 2)
        return sides

    def stage_channels(self) -> list[int]:
        return [self.width * min(2**i, 8) for i in range(len(self.sides()))]

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AutoencoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise EncoderConfigError(
                f"unknown autoencoder settings {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**{key: int(value) for key, value in values.items()})


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    # kernel 4, stride 2, padding 1 doubles the side exactly, so the decoder lands on the input size.
    return [
        nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ConvAutoencoder(nn.Module):
    """conv / batch-norm / ReLU stages with strided halvings -> linear code; the decoder mirrors it with
    transposed convolutions back to the picture (logits; sigmoid gives pixels in 0..1)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        chans, sides = config.stage_channels(), config.sides()
        down: list[nn.Module] = _conv(config.channels, chans[0], 1)
        for c_in, c_out in itertools.pairwise(chans):
            down += _conv(c_in, c_out, 2) + _conv(c_out, c_out, 1)
        flat = chans[-1] * sides[-1] ** 2
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, config.code_size))
        up: list[nn.Module] = [
            nn.Linear(config.code_size, flat),
            nn.Unflatten(1, (chans[-1], sides[-1], sides[-1])),
            nn.BatchNorm2d(chans[-1]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(chans[::-1], chans[-2::-1], strict=False):
            up += _up(c_in, c_out) + _conv(c_out, c_out, 1)
        up.append(nn.Conv2d(chans[0], config.channels, 3, 1, 1))
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        code: torch.Tensor = self.encoder(x)
        return code

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.decoder(code)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# --- preprocessing -------------------------------------------------------------------------------------


def image_to_tensor(image: Image.Image, config: AutoencoderConfig) -> torch.Tensor:
    """Picture -> (channels, size, size) float32 in 0..1, the whole picture squeezed to a square.

    No crop, as for the backbones: retrieval must see everything. Squeezing distorts non-square pictures, but
    every picture is squeezed alike, and the model is trained on pictures prepared by this same function.
    """
    picture = image.convert("L" if config.channels == 1 else "RGB")
    side = config.input_size
    if picture.size != (side, side):
        # Downscale the long side first (PIL's fast reducing path), then squeeze to the square.
        if max(picture.size) > side:
            picture = resize_long_side(picture, side)
        picture = picture.resize((side, side), Image.Resampling.BICUBIC)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def tensor_to_image(pixels: torch.Tensor) -> Image.Image:
    """(channels, H, W) values in 0..1 -> grey or RGB picture."""
    array = (pixels.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    if array.shape[0] == 1:
        return Image.fromarray(array[0])
    return Image.fromarray(array.transpose(1, 2, 0))


# --- checkpoint ----------------------------------------------------------------------------------------


def fingerprint_of(config: AutoencoderConfig, state: Mapping[str, torch.Tensor]) -> str:
    """e.g. 'dae@3f2a9c0d41be/code32/in1x28/pp1': the hash covers the configuration and every tensor."""
    digest = hashlib.sha256(json.dumps(config.as_dict(), sort_keys=True).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes() if tensor.numel() else b"")
    return (
        f"dae@{digest.hexdigest()[:12]}/code{config.code_size}/in{config.channels}x{config.input_size}"
        f"/pp{DAE_PREPROCESS_VERSION}"
    )


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic: a crash mid-write leaves the previous checkpoint, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, checked; every problem is an EncoderConfigError naming the path."""
    if not path.is_file():
        raise EncoderConfigError(
            f"no autoencoder checkpoint at {path}: train one with `cbir train autoencoder DIR -o {path}`, "
            "or fix the path in CBIR_ENCODER / --encoder dae:PATH"
        )
    try:
        # weights_only: a checkpoint is data, and loading it must never run code from the file.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderConfigError(
            f"{path} is not a readable autoencoder checkpoint ({type(exc).__name__}: {exc}); "
            "train one with `cbir train autoencoder`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise EncoderConfigError(
            f"{path} is a PyTorch file but not a cbir autoencoder checkpoint "
            f"(no format {CHECKPOINT_FORMAT!r}): "
            "train one with `cbir train autoencoder`"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise EncoderConfigError(
            f"{path} is an autoencoder checkpoint of version {payload.get('version')}, this cbir reads "
            f"version {CHECKPOINT_VERSION}: retrain it with this version"
        )
    return payload


# --- the encoder ---------------------------------------------------------------------------------------


class AutoencoderEncoder:
    """The encoder half of a trained autoencoder, behind the same interface as models.Encoder.

    Descriptors are the bottleneck code, L2-normalised (cosine similarity in the index). The decoder is kept
    so the service can show what the model rebuilds from a picture (``reconstruct``).
    """

    def __init__(
        self,
        model: ConvAutoencoder,
        *,
        fingerprint: str,
        device: torch.device,
        batch_size: int | None = None,
        source: Path | None = None,
        training: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = model.config
        self.model = model.eval().requires_grad_(False).to(device)
        self.fingerprint = fingerprint
        self.device = device
        self.batch_size = batch_size or (_CUDA_BATCH if device.type == "cuda" else _CPU_BATCH)
        self.dim = self.config.code_size
        # Uploads are decoded straight to the network's size: the JPEG draft path then does most of the work.
        self.max_side = self.config.input_size
        self.source = source
        self.training = dict(training or {})

    def prepare(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pictures -> the (N, channels, size, size) batch the network takes."""
        if not images:
            side = self.config.input_size
            return torch.zeros((0, self.config.channels, side, side))
        return torch.stack([image_to_tensor(image, self.config) for image in images])

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = self.prepare(images)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            out[start : start + self.batch_size] = self.embed_tensors(batch[start : start + self.batch_size])
        return out

    def _check(self, batch: torch.Tensor) -> None:
        c, s = self.config.channels, self.config.input_size
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (c, s, s) or not batch.is_floating_point():
            raise ValueError(
                f"expected a float (B, {c}, {s}, {s}) batch in 0..1, got {batch.dtype} of shape "
                f"{tuple(batch.shape)}"
            )

    def _run(self, batch: torch.Tensor, decode: bool) -> torch.Tensor:
        x = batch.to(self.device, dtype=torch.float32)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"),
        ):
            code = self.model.encode(x)
            return torch.sigmoid(self.model.decode(code)).float() if decode else code.float()

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """(B, channels, size, size) in 0..1 (see ``prepare``) -> (B, code_size) float32 rows."""
        self._check(batch)
        vectors = F.normalize(self._run(batch, decode=False), p=2.0, dim=1)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def reconstruct_tensors(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, channels, size, size) in 0..1 -> the network's rebuilt pictures, same shape, on the CPU."""
        self._check(batch)
        return self._run(batch, decode=True).cpu()

    def reconstruct(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """What the model makes of each picture, at the network's size."""
        rebuilt = self.reconstruct_tensors(self.prepare(images)) if images else torch.zeros((0,))
        return [tensor_to_image(pixels) for pixels in rebuilt]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "autoencoder",
            "checkpoint": str(self.source) if self.source else None,
            **self.config.as_dict(),
            "dim": self.dim,
            "max_side": self.max_side,
            "device": str(self.device),
            "preprocess_version": DAE_PREPROCESS_VERSION,
            "training": self.training,
            "fingerprint": self.fingerprint,
        }


def load_autoencoder(
    path: Path, *, device: str = "auto", batch_size: int | None = None
) -> AutoencoderEncoder:
    """The encoder of the model saved at ``path`` (its best weights), checked against its own fingerprint."""
    payload = read_checkpoint(path)
    try:
        config = AutoencoderConfig.from_dict(payload["config"])
        state = payload["model"]
        model = ConvAutoencoder(config)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise EncoderConfigError(
            f"{path} is a damaged autoencoder checkpoint ({type(exc).__name__}: {exc}); retrain it"
        ) from None
    fingerprint = fingerprint_of(config, state)
    if payload.get("fingerprint") != fingerprint:
        raise EncoderConfigError(
            f"{path}: the weights do not match the fingerprint saved with them ({payload.get('fingerprint')} "
            f"recorded, {fingerprint} computed); the file is damaged or was edited: retrain it"
        )
    return AutoencoderEncoder(
        model,
        fingerprint=fingerprint,
        device=resolve_device(device),
        batch_size=batch_size,
        source=path,
        training=payload.get("training"),
    )

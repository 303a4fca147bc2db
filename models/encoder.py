"""Encoder = backbone + head + L2 normalisation, named by a fingerprint.

The fingerprint is what the index stores next to its vectors: two encoders with the same fingerprint make
interchangeable vectors, and any change that would alter a vector (weights, head settings, input size,
preprocessing) changes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.backbones import DEFAULT_BACKBONE, Backbone, build_backbone
from models.errors import EncoderConfigError
from models.heads import Head, build_head
from models.preprocess import PREPROCESS_VERSION, to_tensor

__all__ = ["Encoder", "build_encoder", "resolve_device"]

# Smallest input that survives a stride-32 backbone with a non-empty feature map.
_MIN_SIDE = 32

# Images per forward pass. On CPU, small batches keep the activations in cache: Lite0 at 320 px runs ~2x
# faster with batches of 4 than of 16 on a 2-core machine. On GPU, bigger batches keep the device busy.
_CPU_BATCH = 4
_CUDA_BATCH = 32


class Encoder:
    """Turns pictures into L2-normalised float32 rows; thread-compatible, holds no per-call state."""

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        *,
        backbone_name: str,
        max_side: int,
        device: torch.device,
        batch_size: int | None = None,
    ) -> None:
        if head.in_channels != backbone.out_channels:
            raise EncoderConfigError(
                f"head {head.name!r} expects {head.in_channels} channels, backbone {backbone_name!r} gives "
                f"{backbone.out_channels}"
            )
        self.backbone_name = backbone_name
        self.head_name = head.name
        self.max_side = max_side
        self.device = device
        self.batch_size = batch_size or (_CUDA_BATCH if device.type == "cuda" else _CPU_BATCH)
        self.dim = head.out_dim
        self.weights_id = backbone.weights_id
        self._head = head.eval().requires_grad_(False).to(device)
        module = backbone.module.eval().requires_grad_(False).to(device)
        self._backbone = module.to(memory_format=torch.channels_last)
        self.fingerprint = _fingerprint(backbone_name, backbone.weights_id, head, max_side)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, dim) rows in input order; only same-size pictures share a batch (padding changes pooling)."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        tensors = [to_tensor(image, self.max_side) for image in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, tensor in enumerate(tensors):
            by_shape.setdefault(tuple(tensor.shape), []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                out[chunk] = self.embed_tensors(torch.stack([tensors[i] for i in chunk]))
        return out

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) tensors already prepared by to_tensor -> (B, dim) float32 rows."""
        if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
            raise ValueError(
                f"expected a float (B, 3, H, W) batch, got {batch.dtype} of shape {tuple(batch.shape)}"
            )
        with torch.inference_mode():
            x = batch.to(self.device, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    fmap = self._backbone(x)
            else:
                fmap = self._backbone(x)
            # Pool and normalise in float32: GeM's powers lose too much in bfloat16.
            vectors = F.normalize(self._head(fmap.float()), p=2.0, dim=1)
            return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """What the service reports about its encoder (health endpoint, CLI)."""
        return {
            "backbone": self.backbone_name,
            "head": self.head_name,
            "head_config": self._head.config(),
            "weights_id": self.weights_id,
            "max_side": self.max_side,
            "dim": self.dim,
            "device": str(self.device),
            "preprocess_version": PREPROCESS_VERSION,
            "fingerprint": self.fingerprint,
        }


def build_encoder(
    backbone: str = DEFAULT_BACKBONE,
    head: str = "gap",
    *,
    weights: Path | None = None,
    max_side: int = 320,
    device: str = "auto",
    head_options: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
) -> Encoder:
    """Assemble an encoder by names; misconfiguration raises EncoderConfigError before any model is built."""
    if max_side < _MIN_SIDE:
        raise EncoderConfigError(f"max_side must be at least {_MIN_SIDE} pixels, got {max_side}")
    torch_device = resolve_device(device)
    built = build_backbone(backbone, weights)
    pooling = build_head(head, built.out_channels, **dict(head_options or {}))
    return Encoder(
        built, pooling, backbone_name=backbone, max_side=max_side, device=torch_device, batch_size=batch_size
    )


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when present, else CPU; asking for absent CUDA is a config error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise EncoderConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise EncoderConfigError(f"device {device!r} asked for, but CUDA is not available; use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise EncoderConfigError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif resolved.type != "cpu":
        raise EncoderConfigError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return resolved


def _fingerprint(backbone: str, weights_id: str, head: Head, max_side: int) -> str:
    """e.g. 'efficientnet_lite0@imagenet-57934424/gem(eps=1e-06,p=3.0)#1a2b3c4d/side320/pp1'.

    The device is deliberately absent: vectors from CPU and GPU are meant to share an index.
    """
    config = head.config()
    head_part = head.name
    if config:
        params = ",".join(f"{key}={json.dumps(config[key], sort_keys=True)}" for key in sorted(config))
        head_part += f"({params})"
    state = head.state_hash()
    if state is not None:
        head_part += f"#{state}"
    return f"{backbone}@{weights_id}/{head_part}/side{max_side}/pp{PREPROCESS_VERSION}"

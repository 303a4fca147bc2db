"""What a pooling head is, and the registry that finds heads by name.

A head turns a backbone feature map into one vector. A new head is one file with a decorated Head subclass
plus one import line in models/heads/__init__.py; the tests iterate over the registry, so it is covered on
arrival.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from models.errors import EncoderConfigError
from models.registry import Registry

__all__ = ["Head", "available_heads", "build_head", "register_head"]


class Head(nn.Module):
    """(B, C, h, w) feature map -> (B, out_dim) vector; the Encoder L2-normalises, so heads need not."""

    name: ClassVar[str]
    # Heads with parameters learned from the user's images (NetVLAD's centroids) say so: an encoder refuses
    # to run one whose parameters were not loaded from a file that `cbir fit` wrote.
    needs_fitting: ClassVar[bool] = False

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise EncoderConfigError(f"head {self.name!r} needs a positive channel count, got {in_channels}")
        self.in_channels = in_channels

    @property
    def is_fitted(self) -> bool:
        return not self.needs_fitting

    @property
    def out_dim(self) -> int:
        """Pooling heads keep one value per channel; heads that project or concatenate override this."""
        return self.in_channels

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that change the output; they go into the encoder fingerprint."""
        return {}

    def state_hash(self) -> str | None:
        """Short hash of the head's learnable state (None if none): a retrained head changes vectors."""
        state = self.state_dict()
        if not state:
            return None
        digest = hashlib.sha256()
        for key in sorted(state):
            tensor = state[key].detach().to("cpu").contiguous()
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()[:8]


_REGISTRY: Registry[type[Head]] = Registry(
    "head", unknown="unknown head {name!r}; known heads: {known}", error=EncoderConfigError
)


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: make the head available under `name` and give it that name."""

    def decorator(cls: type[Head]) -> type[Head]:
        _REGISTRY.add(name, cls)
        cls.name = name
        return cls

    return decorator


def available_heads() -> list[str]:
    return _REGISTRY.names()


def build_head(name: str, in_channels: int, **kwargs: Any) -> Head:
    """Build by name; kwargs are the head's own options (e.g. p for GeM)."""
    cls = _REGISTRY.get(name)
    try:
        return cls(in_channels, **kwargs)
    except TypeError as exc:
        raise EncoderConfigError(f"bad options for head {name!r}: {exc}") from exc

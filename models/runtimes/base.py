"""What an inference runtime is: something that turns the backbone module into a faster CPU forward.

Only the backbone goes through a runtime. Heads, multi-scale resizing, region pooling (roi_align), the
fitted projection and the L2 normalisations stay in float32 torch around it: they are a few percent of the
work (the backbone is ~97 % of a Lite0 forward at 320 px) and this way every head, every scale setting and
region search run on every runtime without one export per head.

A runtime whose vectors differ from torch fp32 beyond FP32_TOLERANCE names itself in the encoder
fingerprint (``fingerprint_tag``), so its vectors never mix with fp32 ones in one index; one within it
shares fp32's fingerprint. The figures behind the tolerance are in the README ("Inference runtimes").
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

__all__ = ["FP32_TOLERANCE", "Forward", "Runtime", "RuntimeContext", "Tolerance"]

# (B, 3, H, W) float32 CPU input -> (B, C, h, w) float32 feature map.
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tolerance:
    """How close a runtime's descriptors must stay to torch fp32's to share its fingerprint."""

    min_cosine: float
    mean_cosine: float


# Measured on the 1,000 Corel photos with the default encoder (bench/runtimes.py): bf16 (torch autocast,
# OpenVINO on AMX) gives min 0.995-0.998 / mean 0.9990-0.9995 and moves mAP by < 0.001; NNCF int8 gives
# min ~0.93 / mean ~0.99 and moves mAP by ~0.002 with a changed ranking of near ties. 0.99 / 0.999 lets
# bf16 through with margin and keeps int8 out: a query in bf16 against fp32 vectors ranks as fp32 does,
# an int8 one would not, and the duplicate threshold (0.9) would shift by the int8 error.
FP32_TOLERANCE = Tolerance(min_cosine=0.99, mean_cosine=0.999)


@dataclass(frozen=True)
class RuntimeContext:
    """What a runtime knows about the module it converts and where it may keep converted files."""

    model_key: str  # backbone name and weights id: one converted file per key
    cache_dir: Path | None  # None: convert in memory at every start
    threads: int | None  # intra-op threads; None: the runtime's default (torch's current setting)

    def file_stem(self) -> str:
        return hashlib.sha256(self.model_key.encode()).hexdigest()[:16]


class Runtime(ABC):
    """One way to run the backbone. Subclasses register with models.runtimes.register_runtime."""

    name: ClassVar[str]
    # None: within FP32_TOLERANCE of torch fp32 (shares its fingerprint); else the fingerprint's tag.
    fingerprint_tag: ClassVar[str | None] = None
    cpu_only: ClassVar[bool] = True
    # auto picks the available runtime with the highest rank (torch fp32 is 0).
    auto_rank: ClassVar[int] = 0

    def missing(self) -> str | None:
        """Why this runtime cannot run here (a package, a CPU feature), or None."""
        return None

    def tag(self, context: RuntimeContext) -> str | None:
        """The fingerprint tag for this context (int8 adds its calibration's id)."""
        return self.fingerprint_tag

    @abstractmethod
    def prepare(self, module: nn.Module, context: RuntimeContext) -> Forward:
        """The module (eval mode, CPU, float32) as a forward function; may convert and cache it."""

"""torch eager on the CPU: fp32 (the reference every other runtime is measured against) and bf16 autocast."""

from __future__ import annotations

import torch
from torch import nn

from models.runtimes.base import Forward, Runtime, RuntimeContext
from models.runtimes.cpu import has_fast_bf16


class TorchFP32(Runtime):
    """What cbir always ran: exact, and the GPU path (the encoder autocasts to bf16 on CUDA itself)."""

    name = "torch"
    cpu_only = False

    def prepare(self, module: nn.Module, context: RuntimeContext) -> Forward:
        model = module.to(memory_format=torch.channels_last)

        def forward(x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = model(x)
            return out

        return forward


class TorchBF16(Runtime):
    """bf16 autocast on the CPU: 1.2-2.3x fp32 on AMX (issue 17's table), cosine to fp32 >= 0.995, so it
    shares fp32's fingerprint; without AMX / AVX-512 BF16 it is emulated and slower, hence not auto."""

    name = "torch_bf16"
    auto_rank = 1

    def missing(self) -> str | None:
        return None if has_fast_bf16() else "this CPU has neither AMX nor AVX-512 BF16 (bf16 is emulated)"

    def prepare(self, module: nn.Module, context: RuntimeContext) -> Forward:
        model = module.to(memory_format=torch.channels_last)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out: torch.Tensor = model(x)
            return out.float()

        return forward

"""CPU features that decide which runtime and precision are fastest (Linux /proc/cpuinfo; empty elsewhere)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["cpu_flags", "has_fast_bf16"]

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that still include bf16 instructions.
_BF16_ISAS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512_AMX")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_fast_bf16() -> bool:
    """AMX or AVX-512 BF16: bf16 matrix units, where OpenVINO bf16 ran 2.4-3.4x its fp32 here (issue 17).
    Without them bf16 is emulated and slower than fp32, so auto keeps fp32."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()  # a cap below AVX-512 BF16 disables it for us too
    if cap and cap not in _BF16_ISAS:
        return False
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags

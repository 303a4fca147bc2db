"""Inference runtimes by name (CBIR_RUNTIME), and the automatic choice. To add one: a file here with a
Runtime subclass and one register_runtime line below.

auto: on CUDA, torch (cuDNN + bf16 autocast already); on a CPU, the installed runtime with the highest
auto_rank that this CPU can run: OpenVINO bf16 on AMX / AVX-512 BF16, else OpenVINO fp32, else ONNX
Runtime, else torch. int8 is never automatic (it changes the fingerprint and needs `cbir optimize`).
"""

from __future__ import annotations

import logging

import torch

from models.errors import EncoderConfigError
from models.registry import Registry
from models.runtimes.base import FP32_TOLERANCE, Forward, Runtime, RuntimeContext, Tolerance
from models.runtimes.onnxruntime import OnnxRuntimeFP32
from models.runtimes.openvino import OpenVINOBF16, OpenVINOFP32, OpenVINOInt8
from models.runtimes.torch_eager import TorchBF16, TorchFP32

__all__ = [
    "AUTO",
    "FP32_TOLERANCE",
    "Forward",
    "Runtime",
    "RuntimeContext",
    "Tolerance",
    "available_runtimes",
    "choose_runtime",
    "get_runtime",
    "register_runtime",
]

AUTO = "auto"
log = logging.getLogger("cbir.runtime")

_REGISTRY: Registry[Runtime] = Registry(
    "runtime", unknown=f"unknown runtime {{name!r}}; use {AUTO} or one of {{known}}", error=EncoderConfigError
)


def register_runtime(runtime: Runtime) -> Runtime:
    if runtime.name == AUTO:
        raise ValueError(f"runtime name {AUTO!r} is the automatic choice, not a runtime")
    return _REGISTRY.register(runtime.name)(runtime)


def available_runtimes() -> list[str]:
    """Every registered name (installed or not; Runtime.missing says why one cannot run here)."""
    return _REGISTRY.names()


def get_runtime(name: str) -> Runtime:
    return _REGISTRY.get(name)


def choose_runtime(requested: str, device: torch.device) -> Runtime:
    """The runtime `requested` names (checked against this machine), or auto's choice; logged either way."""
    if requested == AUTO:
        if device.type != "cpu":
            chosen, why = _REGISTRY.get("torch"), f"device {device}"
        else:
            usable = [rt for rt in _REGISTRY.values() if rt.auto_rank >= 0 and rt.missing() is None]
            chosen = max(usable, key=lambda rt: rt.auto_rank)
            skipped = [f"{rt.name}: {rt.missing()}" for rt in _REGISTRY.values() if rt.missing() is not None]
            why = "fastest usable on this CPU" + (f" (not usable: {'; '.join(skipped)})" if skipped else "")
        log.info("runtime auto -> %s: %s", chosen.name, why)
        return chosen
    runtime = get_runtime(requested)
    if runtime.cpu_only and device.type != "cpu":
        raise EncoderConfigError(
            f"runtime {runtime.name!r} runs on the CPU, the device is {device}: use --device cpu, or "
            "CBIR_RUNTIME=torch (or auto) on a GPU"
        )
    reason = runtime.missing()
    if reason is not None:
        raise EncoderConfigError(f"runtime {runtime.name!r} cannot run here: {reason}; use CBIR_RUNTIME=auto")
    log.info("runtime %s (as configured)", runtime.name)
    return runtime


for _runtime in (TorchFP32(), TorchBF16(), OpenVINOFP32(), OpenVINOBF16(), OpenVINOInt8(), OnnxRuntimeFP32()):
    register_runtime(_runtime)

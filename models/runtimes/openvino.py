"""OpenVINO on the CPU: fp32, bf16 (AMX / AVX-512 BF16) and int8 (NNCF, calibrated on the user's pictures).

Measured in issue 17 on Lite0 at 320 px, 2 cores: fp32 2.3-4.0x torch eager, bf16 on AMX 3.9-9.0x, int8
6-10.5x. The converted model (OpenVINO IR) is written to the runtime cache once, so a start reads it
(~0.1 s) instead of tracing the torch module again (~4 s), and OpenVINO's own CACHE_DIR keeps the compiled
blobs.

Shapes: the model is compiled with dynamic batch, height and width, so any aspect ratio runs at once
(compiling takes ~0.5 s, no stall per shape). Static shapes run faster (bf16 batch 4: 9.0x against 6.3x
dynamic), so a shape seen PROMOTE_AFTER times (a bulk job's few orientations) gets a static compiled copy,
at most MAX_STATIC of them (least recently used go): a service fed odd sizes keeps the dynamic model only.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.runtimes.base import Forward, Runtime, RuntimeContext
from models.runtimes.cpu import has_fast_bf16

PROMOTE_AFTER = 8
MAX_STATIC = 8
# Conversion traces the module once at this size; the IR keeps H and W dynamic.
_EXAMPLE = (1, 3, 128, 128)


def openvino_missing() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the package openvino is not installed (pip install openvino)"
    return None


def ir_path(context: RuntimeContext, suffix: str = "") -> Path | None:
    if context.cache_dir is None:
        return None
    return context.cache_dir / "openvino" / f"{context.file_stem()}{suffix}.xml"


def convert(module: nn.Module) -> Any:
    """The torch module as an OpenVINO model with dynamic (batch, height, width)."""
    import openvino as ov

    with torch.no_grad():
        return ov.convert_model(
            module, example_input=torch.zeros(_EXAMPLE), input=[ov.PartialShape([-1, 3, -1, -1])]
        )


def save_atomically(model: Any, path: Path) -> None:
    """ov.save_model writes NAME.xml + NAME.bin: both go to a temporary name first, the .xml (what readers
    look for) last, so a reader never finds a half-written pair."""
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
        staged = Path(tmp) / path.name
        ov.save_model(model, staged, compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)


def fp32_model(module: nn.Module, context: RuntimeContext) -> Any:
    """The converted fp32 model, read from the runtime cache when there, else converted (and cached)."""
    import openvino as ov

    path = ir_path(context)
    if path is not None and path.is_file():
        return ov.Core().read_model(path)
    model = convert(module)
    if path is not None:
        save_atomically(model, path)
    return model


class CompiledForward:
    """A compiled dynamic model plus static copies for frequent shapes; thread-safe (a request per thread)."""

    def __init__(self, model: Any, precision: str, context: RuntimeContext) -> None:
        import openvino as ov

        self.core = ov.Core()
        if context.cache_dir is not None:
            self.core.set_property({"CACHE_DIR": str(context.cache_dir / "openvino" / "blobs")})
        threads = context.threads or torch.get_num_threads()
        self.config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            # Unpinned threads: on a machine shared with decode workers or other jobs, a thread pinned to a
            # busy core would make every forward wait for it.
            "ENABLE_CPU_PINNING": False,
        }
        self.model = model
        self.dynamic = self.core.compile_model(model, "CPU", self.config)
        self.static: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.seen: dict[tuple[int, ...], int] = {}
        self.lock = threading.Lock()
        self.local = threading.local()

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        with self.lock:
            if shape in self.static:
                self.static.move_to_end(shape)
                return self.static[shape]
            self.seen[shape] = self.seen.get(shape, 0) + 1
            if self.seen[shape] < PROMOTE_AFTER:
                return self.dynamic
            del self.seen[shape]
            import openvino as ov

            fixed = self.model.clone()
            fixed.reshape(ov.PartialShape(list(shape)))
            self.static[shape] = self.core.compile_model(fixed, "CPU", self.config)
            while len(self.static) > MAX_STATIC:
                self.static.popitem(last=False)
            return self.static[shape]

    def _request(self, compiled: Any) -> Any:
        requests: dict[int, Any] = self.local.__dict__.setdefault("requests", {})
        key = id(compiled)
        if key not in requests:
            if len(requests) > 2 * MAX_STATIC:  # models evicted from the LRU: drop their requests too
                requests.clear()
            requests[key] = (compiled, compiled.create_infer_request())
        return requests[key][1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        request = self._request(self._compiled_for(tuple(array.shape)))
        request.infer({0: array})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


class OpenVINOFP32(Runtime):
    """fp32 with OpenVINO's kernels: the same vectors as torch (cosine 1.0000), 2-4x faster on CPUs."""

    name = "openvino"
    auto_rank = 3
    precision = "f32"

    def missing(self) -> str | None:
        return openvino_missing()

    def prepare(self, module: nn.Module, context: RuntimeContext) -> Forward:
        return CompiledForward(fp32_model(module, context), self.precision, context)


class OpenVINOBF16(OpenVINOFP32):
    """bf16 on AMX / AVX-512 BF16 (cosine to fp32 >= 0.997, within FP32_TOLERANCE: same fingerprint)."""

    name = "openvino_bf16"
    auto_rank = 4
    precision = "bf16"

    def missing(self) -> str | None:
        if not has_fast_bf16():
            return "this CPU has neither AMX nor AVX-512 BF16 (bf16 would be emulated, slower than fp32)"
        return openvino_missing()


class OpenVINOInt8(OpenVINOFP32):
    """int8 from `cbir optimize`: NNCF post-training quantisation calibrated on the user's own pictures.

    Its vectors are outside FP32_TOLERANCE (cosine min ~0.93), so the calibration's id is part of the
    fingerprint. It is never converted at start: without a calibrated model in the cache, it is refused.
    """

    name = "openvino_int8"
    fingerprint_tag = "ov-int8"
    auto_rank = -1  # never picked by auto: it changes the fingerprint
    precision = "f32"  # precision of the layers NNCF left unquantised

    def tag(self, context: RuntimeContext) -> str:
        from models.runtimes.int8 import read_calibration

        return f"{self.fingerprint_tag}#{read_calibration(context).calibration_id}"

    def prepare(self, module: nn.Module, context: RuntimeContext) -> Forward:
        import openvino as ov

        from models.runtimes.int8 import read_calibration

        record = read_calibration(context)
        return CompiledForward(ov.Core().read_model(record.model_path), self.precision, context)

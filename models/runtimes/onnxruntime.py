"""ONNX Runtime on the CPU (fp32): 1.7-2.1x torch eager with the same vectors (issue 17's table).

Slower than OpenVINO on x86, but it runs where OpenVINO has no build (e.g. some ARM boards). The export
(torch.onnx, TorchScript path with dynamic batch/height/width: ~10 s for Lite0) is cached as a .onnx file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.runtimes.base import Forward, Runtime, RuntimeContext

_EXAMPLE = (1, 3, 128, 128)


def _export(module: nn.Module, path: Path | None) -> bytes:
    import io

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (torch.zeros(_EXAMPLE),),
            buffer,  # type: ignore[arg-type]  # a file-like object is accepted (and documented)
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "fh", 3: "fw"}},
            dynamo=False,  # the dynamo exporter needs onnxscript and fixes H/W at export
            opset_version=17,
        )
    data = buffer.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as staged:
            staged.write(data)
        os.replace(staged.name, path)
    return data


class OnnxRuntimeFP32(Runtime):
    name = "onnxruntime"
    auto_rank = 2  # below OpenVINO, above torch

    def missing(self) -> str | None:
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"the package {exc.name} is not installed (pip install onnx onnxruntime)"
        return None

    def prepare(self, module: nn.Module, context: RuntimeContext) -> Forward:
        import onnxruntime as ort

        path = context.cache_dir / "onnx" / f"{context.file_stem()}.onnx" if context.cache_dir else None
        data = path.read_bytes() if path is not None and path.is_file() else _export(module, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = context.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

        def forward(x: torch.Tensor) -> torch.Tensor:  # InferenceSession.run is thread-safe
            array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
            return torch.from_numpy(session.run(None, {"x": array})[0])

        return forward

"""Encoder = backbone + head + L2 normalisation, named by a fingerprint.

The fingerprint is what the index stores next to its vectors: two encoders with the same fingerprint make
interchangeable vectors, and any change that would alter a vector (weights, head settings, input size,
preprocessing) changes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.backbones import Backbone, build_backbone
from models.defaults import CPU_BATCH, CUDA_BATCH, DEFAULT_BACKBONE, DEFAULT_HEAD
from models.errors import EncoderConfigError
from models.fitted import load_fitted
from models.heads import Head, build_head
from models.preprocess import PREPROCESS_VERSION, normalise_pixels, to_tensor
from models.projection import Projection
from models.runtimes import Runtime, RuntimeContext, choose_runtime, get_runtime

__all__ = ["Encoder", "build_encoder", "parse_scales", "resolve_device"]

# Smallest input that survives a stride-32 backbone with a non-empty feature map.
_MIN_SIDE = 32

# Images per forward pass. On CPU, small batches keep the activations in cache: Lite0 at 320 px runs ~2x
# faster with batches of 4 than of 16 on a 2-core machine. On GPU, bigger batches keep the device busy
# (the README's H100 figures, 14,000 img/s for Lite0 at 320 px, are at 256).


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
        scales: Sequence[float] = (1.0,),
        projection: Projection | None = None,
        fitted_id: str | None = None,
        compile_model: bool = False,
        runtime: Runtime | None = None,
        runtime_context: RuntimeContext | None = None,
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
        self.batch_size = batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)
        self.scales = _check_scales(scales, max_side)
        if projection is not None and projection.in_dim != head.out_dim:
            raise EncoderConfigError(
                f"the fitted projection takes {projection.in_dim}-d vectors, head {head.name!r} gives "
                f"{head.out_dim}: run `cbir fit` again for this head"
            )
        self.dim = projection.out_dim if projection is not None else head.out_dim
        self.weights_id = backbone.weights_id
        self.fitted_id = fitted_id
        self._head = head.eval().requires_grad_(False).to(device)
        self._projection = projection.eval().to(device) if projection is not None else None
        module = backbone.module.eval().requires_grad_(False).to(device)
        self.runtime = runtime or get_runtime("torch")
        context = runtime_context or RuntimeContext(f"{backbone_name}@{backbone.weights_id}", None, None)
        if compile_model:
            if device.type != "cuda":
                # Measured on CPU (issue 17): inductor compiled the first Corel shape in 21 s, then spent
                # more than 17 minutes recompiling for the other orientation. OpenVINO has dynamic shapes.
                raise EncoderConfigError(
                    "CBIR_COMPILE (torch.compile) is for CUDA only: on a CPU it recompiles for minutes per "
                    "input shape. Use CBIR_RUNTIME=auto (OpenVINO) for a fast CPU forward instead"
                )
            if self.runtime.name != "torch":
                raise EncoderConfigError(f"CBIR_COMPILE needs CBIR_RUNTIME=torch, not {self.runtime.name}")
            # Compiled lazily at the first batch (a shape seen again is compiled with dynamic sizes): worth
            # its start-up time for long GPU bulk jobs, not for the service's single images.
            self._backbone: Callable[[torch.Tensor], torch.Tensor] = torch.compile(module)
        else:
            self._backbone = self.runtime.prepare(module, context)
        runtime_tag = self.runtime.tag(context)
        self.fingerprint = _fingerprint(
            backbone_name, backbone.weights_id, head, max_side, self.scales, projection, fitted_id
        ) + (f"/rt-{runtime_tag}" if runtime_tag else "")

    @property
    def head(self) -> Head:
        """The pooling head (`cbir fit` sets a NetVLAD head's centroids through it)."""
        return self._head

    @property
    def projection(self) -> Projection | None:
        """The fitted projection after pooling, if any (`cbir finetune` learns it again for its new head)."""
        return self._projection

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

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) uint8 pixels from models.preprocess.pixels_from_image (or the GPU decoder), on any
        device -> (B, dim) rows. Moving uint8 and normalising on the model's device moves a quarter of the
        bytes of float input; the result is the same as embed_tensors(to_tensor(...)) batches."""
        if pixels.dtype != torch.uint8 or pixels.ndim != 4:
            raise ValueError(f"expected uint8 (B, 3, H, W) pixels, got {pixels.dtype} {tuple(pixels.shape)}")
        return self.embed_pixels_later(pixels)()

    def embed_pixels_later(self, pixels: torch.Tensor) -> Callable[[], np.ndarray]:
        """embed_pixels without waiting: queues the forward pass and an asynchronous copy of the vectors to
        pinned host memory, and returns the function that waits for them. A bulk job's writer waits, so
        the caller's thread queues the next batch while the GPU works (one wait per batch left GPU gaps)."""
        if pixels.dtype != torch.uint8 or pixels.ndim != 4:
            raise ValueError(f"expected uint8 (B, 3, H, W) pixels, got {pixels.dtype} {tuple(pixels.shape)}")
        with torch.inference_mode():
            batch = normalise_pixels(pixels.to(self.device, non_blocking=True))
            vectors = self._normalised(self._pool_scales(batch, self._head))
            if self.device.type != "cuda":
                rows = np.ascontiguousarray(vectors.numpy(), dtype=np.float32)
                return lambda: rows
            host = torch.empty(vectors.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(vectors, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()

        def wait() -> np.ndarray:
            copied.synchronize()
            return host.numpy()

        return wait

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) tensors already prepared by to_tensor -> (B, dim) float32 rows."""
        if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
            raise ValueError(
                f"expected a float (B, 3, H, W) batch, got {batch.dtype} of shape {tuple(batch.shape)}"
            )
        with torch.inference_mode():
            pooled = self._pool_scales(batch, self._head)
            return self._finish(pooled)

    def embed_region(self, image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
        """(dim,) descriptor of the region box = (x0, y0, x1, y1) of `image`, in its pixel coordinates.

        The whole picture goes through the backbone and the head pools only the box's part of the feature
        map (torchvision's roi_align, sub-cell exact), so the region is seen with its context's receptive
        field, as the same object in a database image was.
        """
        from torchvision.ops import roi_align

        x0, y0, x1, y1 = (float(v) for v in box)
        width, height = image.size
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 <= x0 < x1 <= {width} and "
                f"0 <= y0 < y1 <= {height} (the image's width and height)"
            )
        tensor = to_tensor(image, self.max_side)[None]
        to_tensor_scale = tensor.shape[-1] / width

        def pool_region(fmap: torch.Tensor) -> torch.Tensor:
            cell = fmap.shape[-1] / tensor.shape[-1] * to_tensor_scale  # image pixels -> feature cells
            rows = max(1, round((y1 - y0) * cell))
            cols = max(1, round((x1 - x0) * cell))
            boxes = torch.tensor([[0.0, x0, y0, x1, y1]], dtype=fmap.dtype, device=fmap.device)
            region = roi_align(fmap, boxes, output_size=(rows, cols), spatial_scale=cell, aligned=True)
            return self._head(region)

        with torch.inference_mode():
            return self._finish(self._pool_scales(tensor, pool_region))[0]

    def feature_maps(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Backbone maps (B, C, h, w) of a to_tensor batch, one per scale: what heads are fitted on."""
        with torch.inference_mode():
            return [self._feature_map(self._rescale(batch, scale)).float() for scale in self.scales]

    def pool_maps(self, maps: Sequence[torch.Tensor], *, project: bool = True) -> np.ndarray:
        """Descriptors from feature_maps' output; project=False stops before the fitted projection."""
        with torch.inference_mode():
            total = sum(
                F.normalize(self._head(fmap.to(self.device, torch.float32)), p=2.0, dim=1) for fmap in maps
            )
            assert isinstance(total, torch.Tensor)
            return self._finish(total, project=project)

    def _rescale(self, batch: torch.Tensor, scale: float) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
            raise ValueError(
                f"expected a float (B, 3, H, W) batch, got {batch.dtype} of shape {tuple(batch.shape)}"
            )
        x = batch.to(self.device, dtype=torch.float32)
        if scale != 1.0:
            size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x.contiguous(memory_format=torch.channels_last)

    def _feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fmap: torch.Tensor = self._backbone(x)
                return fmap
        fmap = self._backbone(x)
        return fmap

    def _pool_scales(self, batch: torch.Tensor, pool: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Σ over scales of the L2-normalised pooled vectors (multi-scale descriptors, Radenović et al.)."""
        total: torch.Tensor | None = None
        for scale in self.scales:
            # Pool and normalise in float32: GeM's powers lose too much in bfloat16.
            pooled = F.normalize(pool(self._feature_map(self._rescale(batch, scale)).float()), p=2.0, dim=1)
            total = pooled if total is None else total + pooled
        assert total is not None
        return total

    def _finish(self, pooled: torch.Tensor, *, project: bool = True) -> np.ndarray:
        vectors = self._normalised(pooled, project=project)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def _normalised(self, pooled: torch.Tensor, *, project: bool = True) -> torch.Tensor:
        vectors = F.normalize(pooled, p=2.0, dim=1)
        if project and self._projection is not None:
            vectors = F.normalize(self._projection(vectors), p=2.0, dim=1)
        return vectors

    def describe(self) -> dict[str, Any]:
        """What the service reports about its encoder (health endpoint, CLI)."""
        return {
            "backbone": self.backbone_name,
            "head": self.head_name,
            "head_config": self._head.config(),
            "weights_id": self.weights_id,
            "max_side": self.max_side,
            "scales": list(self.scales),
            "projection": self._projection.config() if self._projection is not None else None,
            "fitted": self.fitted_id,
            "dim": self.dim,
            "device": str(self.device),
            "runtime": self.runtime.name,
            "preprocess_version": PREPROCESS_VERSION,
            "fingerprint": self.fingerprint,
        }


def build_encoder(
    backbone: str = DEFAULT_BACKBONE,
    head: str = DEFAULT_HEAD,
    *,
    weights: Path | None = None,
    max_side: int = 320,
    device: str = "auto",
    head_options: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    scales: Sequence[float] = (1.0,),
    fitted: Path | None = None,
    require_fitted: bool = True,
    compile_model: bool = False,
    runtime: str = "torch",
    runtime_cache: Path | None = None,
    threads: int | None = None,
) -> Encoder:
    """Assemble an encoder by names; misconfiguration raises EncoderConfigError before any model is built.

    ``fitted`` is a file from `cbir fit`: its head state and projection are loaded after checking that they
    were fitted for this backbone, head, max side and scales; the head's settings come from it. A head that
    needs fitting is refused without one, unless ``require_fitted`` is False (which is how `cbir fit` gets
    the encoder it fits).

    ``runtime`` names how the backbone runs (models.runtimes; ``auto`` picks by device, CPU and packages);
    converted models are kept in ``runtime_cache``; ``threads`` are the runtime's intra-op threads.
    """
    if max_side < _MIN_SIDE:
        raise EncoderConfigError(f"max_side must be at least {_MIN_SIDE} pixels, got {max_side}")
    scales = _check_scales(scales, max_side)
    torch_device = resolve_device(device)
    params = load_fitted(fitted) if fitted is not None else None
    options = dict(head_options or {})
    if params is not None and params.head == head:
        options = {**params.head_config, **options}
    built = build_backbone(backbone, weights)
    pooling = build_head(head, built.out_channels, **options)
    if params is not None:
        params.check_matches(
            backbone=backbone,
            weights_id=built.weights_id,
            head=head,
            head_config=pooling.config(),
            max_side=max_side,
            scales=scales,
            origin=str(fitted),
        )
        if params.head_state:
            try:
                pooling.load_state_dict(params.head_state, strict=True)
            except RuntimeError as exc:
                raise EncoderConfigError(
                    f"the head state in {fitted} does not fit head {head!r}: {exc}; run `cbir fit` again"
                ) from exc
    if pooling.needs_fitting and not pooling.is_fitted and require_fitted:
        raise EncoderConfigError(
            f"head {head!r} has parameters to learn from your images: run `cbir fit DIR --head {head}` and "
            "give the file it writes with --fitted (or CBIR_FITTED)"
        )
    return Encoder(
        built,
        pooling,
        backbone_name=backbone,
        max_side=max_side,
        device=torch_device,
        batch_size=batch_size,
        scales=scales,
        projection=params.projection if params is not None else None,
        fitted_id=params.file_id if params is not None else None,
        compile_model=compile_model,
        runtime=choose_runtime(runtime, torch_device),
        runtime_context=RuntimeContext(f"{backbone}@{built.weights_id}", runtime_cache, threads),
    )


def parse_scales(text: str) -> tuple[float, ...]:
    """'1,0.7071,0.5' (a setting or flag) -> (1.0, 0.7071, 0.5); build_encoder checks the values."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EncoderConfigError(
            f"scales must be comma-separated numbers, e.g. 1,0.7071,0.5, got {text!r}"
        ) from None


def _check_scales(scales: Sequence[float], max_side: int) -> tuple[float, ...]:
    """Scales are factors of max_side in (0, 1] (the input is never upsampled past max_side), no repeats."""
    checked = tuple(float(s) for s in scales)
    if not checked or any(not 0 < s <= 1 for s in checked) or len(set(checked)) != len(checked):
        raise EncoderConfigError(
            f"scales must be distinct factors in (0, 1], e.g. 1,0.7071,0.5, got {scales}"
        )
    if min(checked) * max_side < _MIN_SIDE:
        raise EncoderConfigError(
            f"scale {min(checked):g} of max side {max_side} is below the {_MIN_SIDE}-pixel minimum input"
        )
    return checked


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


def _fingerprint(
    backbone: str,
    weights_id: str,
    head: Head,
    max_side: int,
    scales: tuple[float, ...] = (1.0,),
    projection: Projection | None = None,
    fitted_id: str | None = None,
) -> str:
    """e.g. 'efficientnet_lite0@imagenet-57934424/gem(eps=1e-06,p=3.0)#1a2b3c4d/side320/pp1'.

    Multi-scale, a projection and a fitted file add '/scales1,0.7071', '/proj(dim=512,eigen_power=-0.5)'
    and '/fit#<file id>'; single scale without them keeps the original form, so existing collections stay
    valid. The device is deliberately absent: vectors from CPU and GPU are meant to share an index.
    """
    config = head.config()
    head_part = head.name
    if config:
        params = ",".join(f"{key}={json.dumps(config[key], sort_keys=True)}" for key in sorted(config))
        head_part += f"({params})"
    state = head.state_hash()
    if state is not None:
        head_part += f"#{state}"
    fingerprint = f"{backbone}@{weights_id}/{head_part}/side{max_side}/pp{PREPROCESS_VERSION}"
    if scales != (1.0,):
        fingerprint += "/scales" + ",".join(f"{s:g}" for s in scales)
    if projection is not None:
        fingerprint += f"/proj(dim={projection.out_dim},eigen_power={projection.eigen_power:g})"
    if fitted_id:
        fingerprint += f"/fit#{fitted_id}"
    return fingerprint

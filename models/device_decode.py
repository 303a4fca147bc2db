"""JPEG decoding and resizing on the GPU (nvJPEG through torchvision), for the bulk job on CUDA.

On an H100 a CPU core decodes and resizes a few hundred photos a second while the network embeds over ten
thousand: decoding on the GPU is what lets a bulk job keep up with the model. The output is the same kind
of pixels the CPU path makes (uint8, upright, long side max_side), so the two paths mix in one batch and
the network input differs only by decoder and resampler rounding (measured cosine of the descriptors:
README, "How fast it indexes").

Only files the CPU path would accept go this way (`routes_to_device`): the CPU route stays the reference,
and anything nvJPEG might read differently — CMYK/YCCK, truncated scans — goes there instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.preprocess import ImageProbe, scaled_size

__all__ = ["decode_jpegs", "orient", "resize_pixels", "routes_to_device"]

# Modes nvJPEG turns into RGB as libjpeg does; CMYK and YCCK JPEGs (Adobe's inverted ones) go to PIL.
_DEVICE_MODES = frozenset({"RGB", "L"})
_SOS = b"\xff\xda"  # start of scan
_EOI = b"\xff\xd9"  # end of image


def routes_to_device(probe: ImageProbe, data: bytes) -> bool:
    """Whether this file may be decoded by nvJPEG: a JPEG in RGB or grey whose last scan is complete.

    PIL refuses a JPEG cut inside its scan data, while nvJPEG may fill the missing part with grey; an end
    marker after the last start-of-scan marker is what a complete file has (entropy-coded data cannot
    contain one), so anything else is left to the CPU path, which decides as it always did.
    """
    if probe.format not in ("JPEG", "MPO") or probe.mode not in _DEVICE_MODES:
        return False
    return data.rfind(_EOI) > data.rfind(_SOS) >= 0


def decode_jpegs(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 (3, H, W) RGB tensors on device as stored (no EXIF rotation); None where nvJPEG refused.

    One batched nvJPEG call; if it fails (one bad file fails the whole call), each file is tried alone, so
    only the refused ones fall back to the CPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    if not tensors:
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs for TorchCodec, which has no batched nvJPEG decode yet.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        decoded: list[torch.Tensor | None] = []
        for tensor in tensors:
            try:
                decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF orientation 1-8 to (..., H, W), as PIL's transpose does in models.preprocess."""
    if orientation == 2:
        return pixels.flip(-1)
    if orientation == 3:
        return pixels.flip(-1, -2)
    if orientation == 4:
        return pixels.flip(-2)
    if orientation == 5:
        return pixels.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(pixels, -1, dims=(-2, -1))
    if orientation == 7:
        return torch.rot90(pixels.transpose(-1, -2), 2, dims=(-2, -1))
    if orientation == 8:
        return torch.rot90(pixels, 1, dims=(-2, -1))
    return pixels


def resize_pixels(pixels: torch.Tensor, max_side: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, h, w) with long side max_side: antialiased bicubic, rounded.

    The GPU counterpart of resize_long_side (PIL's bicubic), rounded back to uint8 so both routes hand the
    network the same kind of input.
    """
    height, width = pixels.shape[-2:]
    if max(height, width) == max_side:
        return pixels
    new_w, new_h = scaled_size(width, height, max_side)
    resized = F.interpolate(
        pixels.float(), size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)

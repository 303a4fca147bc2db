"""Image bytes -> RGB picture -> normalised tensor.

Every vector in an index must come from pixels prepared the same way, so this is the single place that decides
how an upload becomes network input. Anything here that changes the pixels fed to the network must bump
PREPROCESS_VERSION, which is part of the encoder fingerprint and so forces a reindex.
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from models.errors import ImageDecodeError, ImageTooLargeError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREPROCESS_VERSION",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageDecodeError",
    "ImageProbe",
    "ImageTooLargeError",
    "decode_image",
    "normalise_pixels",
    "pixels_from_image",
    "probe_image",
    "resize_long_side",
    "scaled_size",
    "to_tensor",
]

PREPROCESS_VERSION: Final = 1

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)

# Formats PIL may try. Anything else is refused before decoding: EPS would start Ghostscript on untrusted
# bytes, and headerless formats (TGA) would make random bytes "recognised" as an image. Multi-picture JPEGs
# from phones (MPO) come in through the JPEG opener. HEIF (iPhones' HEIC photos) through pillow-heif's opener,
# which is registered here, at import, so the bulk job's forked readers inherit it; the same size and pixel
# limits apply, since they are checked on the header PIL reads, whatever the format.
SUPPORTED_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "BMP", "TIFF", "PPM")
try:
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - an optional decoder: without it, HEIC files are "not an image"
    pass
else:
    register_heif_opener()

# Bicubic matches how the Corel-1K reference figure was measured; reducing_gap lets PIL shrink huge images by
# an integer factor first, which is much faster and visually indistinguishable at a gap of 3.
_RESAMPLE: Final = Image.Resampling.BICUBIC
_REDUCING_GAP: Final = 3.0

_EXIF_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE_FOR_ORIENTATION: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    """A decoded upload plus the facts about the original that the app stores next to the vector."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly downscaled to max_side
    width: int  # of the original after EXIF orientation, not after any downscaling
    height: int
    format: str  # PIL's format name, e.g. "JPEG"


def decode_image(data: bytes, *, max_side: int | None = None, max_pixels: int = 100_000_000) -> DecodedImage:
    """Decode untrusted bytes into an upright RGB picture, or raise ImageDecodeError saying why not.

    The type is decided by the content, never by a file name. The pixel limit is checked on the header
    before decoding, so a decompression bomb costs nothing. When max_side is given, JPEGs are decoded at a
    reduced DCT scale (PIL draft) that is still at least max_side on the long side, then resized so the long
    side is exactly max_side. Small images are upscaled too: CNN descriptors depend on object scale, and a
    thumbnail must land at the same scale as the full-size photo it should match.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone flipped PIL's process-wide switch; half-grey images would then be indexed silently.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; decode_image needs it False")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    if not data:
        raise ImageDecodeError("empty upload (0 bytes): not an image")
    # Our max_pixels is the limit that counts. PIL's warning for 89M-179M pixels is noise for images we
    # accept, and an exception where warnings are errors (python -W error, pytest filters), so it is silenced
    # here; PIL's hard error above ~179M pixels still applies and becomes ImageTooLargeError. catch_warnings
    # is not thread-safe, but the worst a race can do is leave this one "ignore" filter installed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return _decode(data, max_side, max_pixels)
        except Image.DecompressionBombError as exc:
            # PIL refuses before it exposes the size; its message carries the pixel count.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f"{int(found.group(1))} pixels" if found else "far too many pixels"
            raise ImageTooLargeError(
                f"image has {pixels}, above the limit of {max_pixels}: resize it before uploading"
            ) from exc


def _decode(data: bytes, max_side: int | None, max_pixels: int) -> DecodedImage:
    image = _open(data)
    fmt = image.format or "image"
    stored_w, stored_h = image.size
    if stored_w * stored_h > max_pixels:
        raise ImageTooLargeError(
            f"image is {stored_w}x{stored_h} = {stored_w * stored_h} pixels, above the limit of "
            f"{max_pixels}: resize it before uploading"
        )
    if fmt == "GIF" and not data.rstrip(b"\0").endswith(b";"):
        # Only the first frame is decoded, so a cut in a later frame would pass unseen; every complete GIF
        # ends with the trailer byte ';'.
        raise ImageDecodeError("truncated GIF: the file ends before its trailer")
    orientation = _exif_orientation(image)
    width, height = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)

    if max_side is not None and isinstance(image, JpegImageFile):
        # draft() picks the largest DCT reduction (1/2, 1/4, 1/8) that keeps the image at least this size.
        image.draft(None, scaled_size(stored_w, stored_h, max_side, ceil=True))
    try:
        image.load()  # forces the full decode, so a truncated file fails here and not later in a worker
        if orientation in _TRANSPOSE_FOR_ORIENTATION:
            image = image.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
        rgb = _to_rgb(image, fmt)
    except (ImageDecodeError, Image.DecompressionBombError, MemoryError):
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib/struct errors... on bad data
        raise ImageDecodeError(f"truncated or corrupt {fmt}: {exc}") from exc

    if max_side is not None:
        rgb = resize_long_side(rgb, max_side)
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


def resize_long_side(image: Image.Image, max_side: int) -> Image.Image:
    """Scale so the long side is exactly max_side, keeping the aspect ratio (the short side is at least 1)."""
    w, h = image.size
    if max(w, h) == max_side:
        return image
    size = scaled_size(w, h, max_side, ceil=False)
    return image.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP if max_side < max(w, h) else None)


def scaled_size(w: int, h: int, max_side: int, *, ceil: bool = False) -> tuple[int, int]:
    """(w, h) scaled so the long side is max_side; the short side rounded (or rounded up), at least 1."""
    short = min(w, h) * max_side / max(w, h)
    short_px = max(1, math.ceil(short - 1e-6) if ceil else round(short))
    return (max_side, short_px) if w >= h else (short_px, max_side)


def to_tensor(image: Image.Image, max_side: int) -> torch.Tensor:
    """RGB picture -> (3, H, W) float32, long side max_side, ImageNet-normalised, no crop.

    No crop because retrieval must see the whole picture; no padding because it would change pooled values.
    It is pixels_from_image then normalise_pixels, the two steps the bulk job runs apart (decoding in
    worker processes, normalising on the model's device), so both paths feed the network the same floats.
    """
    return normalise_pixels(pixels_from_image(image, max_side))


def pixels_from_image(image: Image.Image, max_side: int) -> torch.Tensor:
    """RGB picture -> (3, H, W) uint8, long side max_side: a quarter of the float tensor's bytes to move."""
    if image.mode != "RGB":
        image = _to_rgb(image, "image")
    image = resize_long_side(image, max_side)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy())


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) on any device -> float32 ImageNet-normalised, computed as x / 255, - mean, / std.

    The same float32 operations in the same order on every path (upload, bulk job, GPU decode), so a CPU
    bulk job and an upload give bit-identical network input.
    """
    if pixels.dtype != torch.uint8 or pixels.ndim < 3 or pixels.shape[-3] != 3:
        raise ValueError(f"expected uint8 (..., 3, H, W) pixels, got {pixels.dtype} {tuple(pixels.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    return (pixels.to(torch.float32) / 255.0 - mean) / std


@dataclass(frozen=True)
class ImageProbe:
    """What the header says, read without decoding the pixels (the bulk job's GPU route decides on it)."""

    format: str
    width: int  # after EXIF orientation, like DecodedImage
    height: int
    mode: str
    orientation: int  # EXIF 1-8
    progressive: bool


def probe_image(data: bytes, *, max_pixels: int = 100_000_000) -> ImageProbe:
    """Format, size, mode and orientation from the header, with the same refusals as decode_image's."""
    if not data:
        raise ImageDecodeError("empty upload (0 bytes): not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = _open(data)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"image has far too many pixels: {exc}") from exc
    stored_w, stored_h = image.size
    if stored_w * stored_h > max_pixels:
        raise ImageTooLargeError(
            f"image is {stored_w}x{stored_h} = {stored_w * stored_h} pixels, above the limit of "
            f"{max_pixels}: resize it before uploading"
        )
    orientation = _exif_orientation(image)
    width, height = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    return ImageProbe(image.format or "image", width, height, image.mode, orientation, progressive)


def _open(data: bytes) -> Image.Image:
    """Identify the format from the bytes and read the header only."""
    try:
        return Image.open(io.BytesIO(data), formats=_openable_formats())
    except Image.DecompressionBombError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not an image (no known format recognised; supported: {', '.join(SUPPORTED_FORMATS)})"
        ) from exc
    except Exception as exc:  # a recognised header that PIL cannot parse
        raise ImageDecodeError(f"corrupt image header: {exc}") from exc


@functools.cache
def _openable_formats() -> tuple[str, ...]:
    """SUPPORTED_FORMATS that this Pillow build can open (AVIF needs Pillow >= 11.2); naming a missing one
    would make Image.open fail for every upload."""
    Image.init()
    return tuple(fmt for fmt in SUPPORTED_FORMATS if fmt in Image.OPEN)


def _exif_orientation(image: Image.Image) -> int:
    """EXIF orientation 1-8; a broken EXIF block must not reject a good picture, so it reads as 1."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(image: Image.Image, fmt: str) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white, as a viewer shows it on a white page."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if (mode == "P" and "transparency" in image.info) or mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(f"unsupported {fmt} pixel mode {mode!r}: {exc}") from exc


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey -> 8-bit grey by the range the data can have, not PIL's clipping at 255.

    PIL's convert("RGB") clips I;16 values at 255, which turns almost every 16-bit photo white.
    """
    array = np.asarray(image).astype(np.float64)
    peak = float(array.max(initial=0.0))
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "F":  # floats are usually 0..1; otherwise stretch to the brightest pixel
        top = 1.0 if peak <= 1.0 else peak
    else:  # "I": 32-bit signed, almost always holding 8- or 16-bit data
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    grey = np.clip(np.rint(array / top * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")

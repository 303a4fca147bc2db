"""Edited copies of pictures, seeded: the queries of the instance-level ("same picture") benchmark.

Each copy applies two or three edits, drawn without repetition from what people do to a picture before
they search with it (or what happened to it on the way): a crop, a small rotation, a colour / contrast /
brightness shift, blur with heavy JPEG, mirror plus downscale, greyscale, a caption bar, pasting onto a
larger canvas, a screenshot-like frame. Strengths are drawn too. The last save is a JPEG (quality 85) unless
the heavy-JPEG edit already saved it, so every copy is a re-encoded file, as an upload would be.

Two parts with different seeds and *disjoint* originals: "tuned" (what thresholds and options are chosen
on) and "held-out" (reported, never tuned on).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

__all__ = ["EDITS", "Copy", "edit", "make_copies", "split_originals"]

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    keep = rng.uniform(0.6, 0.85)  # of each side
    w, h = image.size
    cw, ch = max(8, round(w * keep)), max(8, round(h * keep))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(5, 20) * rng.choice([-1, 1]))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(0, 0, 0))


def _colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.4, 1.8))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 1.5))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.35))
    shift = rng.uniform(-25, 25, size=3)
    pixels = np.clip(np.asarray(image, np.float32) + shift, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _blur_jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(8, 20)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _mirror_downscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = rng.uniform(0.4, 0.7)
    w, h = image.size
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    return ImageOps.mirror(image).resize(size, Image.Resampling.BILINEAR)


def _greyscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def _caption(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    bar = max(4, round(h * rng.uniform(0.12, 0.2)))
    dark = bool(rng.integers(0, 2))
    canvas = Image.new("RGB", (w, h + bar), (0, 0, 0) if dark else (255, 255, 255))
    top = bool(rng.integers(0, 2))
    canvas.paste(image, (0, bar if top else 0))
    draw = ImageDraw.Draw(canvas)
    words = ["when you see it", "Monday mood", "best holiday ever", "LOL", "share if you agree"]
    text = words[int(rng.integers(0, len(words)))]
    draw.text((4, (0 if top else h) + bar // 4), text, fill=(255, 255, 255) if dark else (0, 0, 0))
    return canvas


def _paste(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    grow = rng.uniform(1.3, 1.8)
    cw, ch = round(w * grow), round(h * grow)
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    canvas = Image.new("RGB", (cw, ch), colour)
    noise = rng.integers(-20, 21, size=(ch, cw, 3))
    canvas = Image.fromarray(np.clip(np.asarray(canvas, np.int16) + noise, 0, 255).astype(np.uint8))
    canvas.paste(image, (int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))))
    return canvas


def _screenshot(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A window around the picture: a title bar, grey side borders, a status bar."""
    w, h = image.size
    side, title, status = (max(2, round(h * f)) for f in (rng.uniform(0.03, 0.1), 0.1, 0.06))
    grey = int(rng.integers(200, 245))
    canvas = Image.new("RGB", (w + 2 * side, h + title + status), (grey, grey, grey))
    canvas.paste(image, (side, title))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, title - 1), fill=(60, 60, 70))
    draw.text((6, 1), "IMG_2041.jpg - Photos", fill=(230, 230, 230))
    return canvas


EDITS: dict[str, Edit] = {
    "crop": _crop,
    "rotate": _rotate,
    "colour": _colour,
    "blur+jpeg": _blur_jpeg,
    "mirror+downscale": _mirror_downscale,
    "greyscale": _greyscale,
    "caption": _caption,
    "paste": _paste,
    "screenshot": _screenshot,
}


@dataclass(frozen=True)
class Copy:
    original: int  # position of the original in the collection
    edits: tuple[str, ...]
    data: bytes  # the copy as a JPEG file


def edit(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, tuple[str, ...]]:
    """Two or three distinct edits, in a random order; returns the picture and the edits' names."""
    names = list(rng.choice(list(EDITS), size=int(rng.integers(2, 4)), replace=False))
    image = image.convert("RGB")
    for name in names:
        image = EDITS[name](image, rng)
    return image, tuple(str(n) for n in names)


def split_originals(count: int, per_part: int, seed: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint original positions for the tuned and the held-out part."""
    chosen = np.random.default_rng(seed).permutation(count)[: 2 * per_part]
    return np.sort(chosen[:per_part]), np.sort(chosen[per_part:])


def make_copies(images: list[Image.Image], originals: np.ndarray, seed: int) -> list[Copy]:
    """One edited copy of each original, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    out: list[Copy] = []
    for position, image in zip(originals.tolist(), images, strict=True):
        edited, names = edit(image, rng)
        buffer = io.BytesIO()
        if "blur+jpeg" in names and names[-1] == "blur+jpeg":
            edited.save(buffer, "JPEG", quality=95)  # already heavily compressed: keep that damage as is
        else:
            edited.save(buffer, "JPEG", quality=85)
        out.append(Copy(position, names, buffer.getvalue()))
    return out

"""Measures the near-duplicate threshold: cosine similarity of edited copies against that of distinct photos.

Near-duplicates are the same photo after edits a collection really accumulates: re-saved as a low-quality
JPEG, downscaled, cropped by 10 %, brightened, framed by a border. For every threshold it prints the share of
(original, edited copy) pairs at or above it (recall) and how many pairs of *distinct* Corel-1K photos are at
or above it (false pairs, out of n(n-1)/2), with the configured encoder (default: the service's). The
recommended threshold is the lowest one at which distinct photos give at most --max-false false pairs per
1,000 images: duplicates found as completely as the encoder allows without flooding a real collection.

    python bench/duplicates.py [--dir DIR] [--originals N] [--max-false F]

The last line is JSON with the threshold, its recall per edit and its false pairs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.encoders import encoder_from_settings  # noqa: E402
from app.files.decoding import list_files  # noqa: E402
from models import decode_image  # noqa: E402


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(image: Image.Image, keep: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
    return image.crop((dx, dy, w - dx, h - dy))


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg q30": lambda im: _jpeg(im, 30),
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "crop 90%": lambda im: _crop(im, 0.9),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "border": lambda im: ImageOps.expand(im, border=max(4, im.width // 20), fill=(255, 255, 255)),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "corel1k")
    parser.add_argument("--originals", type=int, default=200, help="photos edited (spread over the folder)")
    parser.add_argument("--max-false", type=float, default=1.0, help="false pairs allowed per 1,000 images")
    args = parser.parse_args()

    settings = Settings()
    encoder = encoder_from_settings(settings)
    paths = list_files(args.dir)
    started = time.perf_counter()
    data = [p.read_bytes() for p in paths]
    base = encoder.embed([_upload(d, encoder.max_side, settings.max_pixels) for d in data])
    step = max(1, len(data) // args.originals)
    chosen = list(range(0, len(data), step))[: args.originals]
    originals = {i: decode_image(data[i], max_pixels=settings.max_pixels).image for i in chosen}
    edited = {
        name: encoder.embed(
            [_upload(_png(edit(originals[i])), encoder.max_side, settings.max_pixels) for i in chosen]
        )
        for name, edit in EDITS.items()
    }
    seconds = time.perf_counter() - started

    sims = base @ base.T
    distinct = sims[np.triu_indices(len(base), k=1)]
    copies = {name: np.sum(vectors * base[chosen], axis=1) for name, vectors in edited.items()}
    allowed = args.max_false * len(base) / 1000
    print(f"encoder {encoder.fingerprint}; {len(base)} photos, {len(chosen)} edited {len(EDITS)} ways")
    print(f"{'threshold':>9} {'false pairs':>11}  " + "  ".join(f"{name:>9}" for name in EDITS))
    chosen_threshold = None
    for threshold in np.round(np.arange(0.80, 0.996, 0.005), 3):
        false_pairs = int(np.sum(distinct >= threshold))
        recalls = [float(np.mean(values >= threshold)) for values in copies.values()]
        print(f"{threshold:9.3f} {false_pairs:11d}  " + "  ".join(f"{r:9.3f}" for r in recalls))
        if chosen_threshold is None and false_pairs <= allowed:
            chosen_threshold = float(threshold)
    if chosen_threshold is None:
        chosen_threshold = 0.995
    result = {
        "encoder": encoder.fingerprint,
        "threshold": chosen_threshold,
        "false_pairs": int(np.sum(distinct >= chosen_threshold)),
        "distinct_pairs": len(distinct),
        "recall": {name: round(float(np.mean(v >= chosen_threshold)), 3) for name, v in copies.items()},
        "min_copy_similarity": {name: round(float(v.min()), 4) for name, v in copies.items()},
        "seconds": round(seconds, 1),
    }
    print(json.dumps(result))


def _png(image: Image.Image) -> bytes:
    """An edited copy as the file a user would upload (lossless, so the edit is all that changed)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(data: bytes, max_side: int, max_pixels: int) -> Image.Image:
    """Decoded exactly as the service decodes an upload."""
    return decode_image(data, max_side=max_side, max_pixels=max_pixels).image


if __name__ == "__main__":
    main()

"""The hostile corpus: odd but valid pictures, broken files, decompression bombs in every container that can
declare a huge canvas in a few bytes (PNG, GIF, TIFF, WebP), hostile file names and hostile metadata.

Every way in (POST /images, /search, /denoise, `cbir index`, `cbir search`) is tested against the same lists,
so a file added here is tried everywhere the day it lands.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from tests.helpers.images import encode

WIDTH, HEIGHT = 90, 60


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height with 64 bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def exif_rotated(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    return encode(picture(seed), "JPEG", exif=exif.tobytes())


def animated_gif(seed: int) -> bytes:
    frames = [picture(seed), picture(seed + 1000)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency(seed: int) -> bytes:
    image = picture(seed).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0)


def sixteen_bit(seed: int) -> bytes:
    grey = np.asarray(picture(seed).convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(grey)
    assert image.mode == "I;16"
    return encode(image, "PNG")


# name -> (bytes maker, expected (width, height) as stored in the row)
ACCEPTED: dict[str, tuple[Callable[[int], bytes], tuple[int, int]]] = {
    "jpeg": (lambda s: encode(picture(s), "JPEG"), (WIDTH, HEIGHT)),
    "png": (lambda s: encode(picture(s), "PNG"), (WIDTH, HEIGHT)),
    "webp": (lambda s: encode(picture(s), "WEBP"), (WIDTH, HEIGHT)),
    "gif-animated": (animated_gif, (WIDTH, HEIGHT)),
    "bmp": (lambda s: encode(picture(s), "BMP"), (WIDTH, HEIGHT)),
    "tiff": (lambda s: encode(picture(s), "TIFF"), (WIDTH, HEIGHT)),
    "tiff-deflate": (lambda s: encode(picture(s), "TIFF", compression="tiff_deflate"), (WIDTH, HEIGHT)),
    "jpeg-cmyk": (lambda s: encode(picture(s).convert("CMYK"), "JPEG"), (WIDTH, HEIGHT)),
    "png-palette-transparency": (palette_with_transparency, (WIDTH, HEIGHT)),
    "png-la": (lambda s: encode(picture(s).convert("LA"), "PNG"), (WIDTH, HEIGHT)),
    "png-rgba": (lambda s: encode(picture(s).convert("RGBA"), "PNG"), (WIDTH, HEIGHT)),
    "png-16bit": (sixteen_bit, (WIDTH, HEIGHT)),
    "png-1bit": (lambda s: encode(picture(s).convert("1"), "PNG"), (WIDTH, HEIGHT)),
    "jpeg-exif-rotated": (exif_rotated, (HEIGHT, WIDTH)),
}


def gif_header(width: int, height: int) -> bytes:
    """A tiny GIF whose screen and frame declare width x height (up to 65535 each)."""
    data = bytearray(encode(picture(0).resize((8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen descriptor
    frame = data.index(b"\x2c", 13)  # image descriptor
    data[frame + 5 : frame + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def tiff_header(width: int, height: int) -> bytes:
    """An uncompressed 1-bit TIFF declaring width x height, with one byte of strip data."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 1), (259, 3, 1), (262, 3, 1), (273, 4, 0)]
    entries += [(277, 3, 1), (278, 4, height), (279, 4, 1)]
    strip = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, value in entries:
        value = strip if tag == 273 else value
        out += (
            struct.pack("<HHIHH", tag, kind, 1, value, 0)
            if kind == 3
            else struct.pack("<HHII", tag, kind, 1, value)
        )
    return out + struct.pack("<I", 0) + b"\x00"


def webp_header(width: int, height: int) -> bytes:
    """A lossy WebP whose VP8 frame header declares width x height (up to 16383 each)."""
    data = bytearray(encode(picture(0).resize((16, 16)), "WEBP"))
    start = data.index(b"\x9d\x01\x2a")  # the VP8 key frame's start code, then width and height
    data[start + 3 : start + 7] = struct.pack("<HH", width, height)
    return bytes(data)


REFUSED: dict[str, tuple[bytes, int]] = {
    "zero-bytes": (b"", 422),
    "text": (b"just some words, not an image\n" * 20, 422),
    "html": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", 422),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', 422),
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 422),
    "random-bytes": (np.random.default_rng(1).bytes(5000), 422),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", 422),
    "bomb-20000x20000": (png_header(20000, 20000), 413),
    "bomb-11000x10000": (png_header(11000, 10000), 413),  # under PIL's own limit: ours refuses it
    "gif-bomb-65535x65535": (gif_header(65535, 65535), 413),
    "gif-bomb-11000x10000": (gif_header(11000, 10000), 413),
    "tiff-bomb-20000x20000": (tiff_header(20000, 20000), 413),
    "tiff-bomb-11000x10000": (tiff_header(11000, 10000), 413),
    "webp-bomb-16383x16383": (webp_header(16383, 16383), 413),
    "webp-bomb-11000x10000": (webp_header(11000, 10000), 413),
}
for _name, (_make, _) in list(ACCEPTED.items())[:7]:
    _data = _make(99)
    REFUSED[f"{_name}-truncated"] = (_data[: len(_data) * 2 // 3], 422)


# File names a client may send: stored as the original name only, never used as a path.
HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "..\\..\\windows\\system32\\config",
    "/absolute/path.jpg",
    "name with spaces and ünïcødé ✓.jpg",
    "\u202egpj.exe",  # right-to-left override: shows as "exe.jpg"
    "<script>alert(1)</script>.jpg",
    "x" * 1000 + ".jpg",
    ".",
]

# Metadata a client may send, with the status it must get: 201 stores it as sent, 422 names the problem.
HOSTILE_METADATA: dict[str, tuple[str, int]] = {
    "deep-nesting": ('{"a": ' * 5000 + "1" + "}" * 5000, 422),
    "nan": ('{"price": NaN}', 422),
    "infinity": ('{"price": Infinity}', 422),
    "nul-in-string": ('{"note": "a\\u0000b"}', 422),
    "nul-in-key": ('{"a\\u0000": 1}', 422),
    "lone-surrogate": ('{"note": "\\ud800"}', 422),
    "array": ("[1, 2, 3]", 422),
    "not-json": ("{'single': 'quotes'}", 422),
    "unicode": ('{"名前": "写真 ✓", "emoji": "📷"}', 201),
    "html": ('{"title": "<img src=x onerror=alert(1)>"}', 201),
    "big-numbers": ('{"n": 123456789012345678901234567890, "f": 1e308}', 201),
}

"""A corpus of odd and broken files, generated here, sent to the API: each gets its expected status, and
afterwards the service still answers /health and searches correctly, with nothing written for the refused."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app

WIDTH, HEIGHT = 90, 60


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
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

REFUSED: dict[str, tuple[bytes, int]] = {
    "zero-bytes": (b"", 422),
    "text": (b"just some words, not an image\n" * 20, 422),
    "html": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", 422),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', 422),
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 422),
    "random-bytes": (np.random.default_rng(1).bytes(5000), 422),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", 422),
    "bomb-20000x20000": (png_header(20000, 20000), 413),
    "bomb-11000x10000": (png_header(11000, 10000), 413),
}
for _name, (_make, _) in list(ACCEPTED.items())[:7]:
    _data = _make(99)
    REFUSED[f"{_name}-truncated"] = (_data[: len(_data) * 2 // 3], 422)


def test_every_file_of_the_corpus_gets_its_status(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        ids: dict[str, int] = {}
        for seed, (name, (make, size)) in enumerate(ACCEPTED.items()):
            # a misleading name and content type: the type is decided by decoding only
            response = client.post("/images", files={"file": (f"{name}.txt", make(seed), "text/plain")})
            assert response.status_code == 201, (name, response.text)
            image = response.json()["image"]
            assert (image["width"], image["height"]) == size, name
            ids[name] = image["id"]
        for name, (data, status) in REFUSED.items():
            for endpoint in ("/images", "/search"):
                response = client.post(endpoint, files={"file": (f"{name}.jpg", data, "image/jpeg")})
                assert response.status_code == status, (name, endpoint, response.text)
                body = response.json()
                assert set(body) == {"error", "detail"}, name
                assert "Traceback" not in body["detail"]
        too_big = client.post("/images", files={"file": ("big.jpg", b"\xff\xd8" + b"0" * (21 * 1024 * 1024))})
        assert too_big.status_code == 413

        assert client.get("/health").status_code == 200
        stats = client.get("/stats").json()
        assert (stats["count"], stats["indexed"]) == (len(ACCEPTED), len(ACCEPTED))
        stored = [p for p in settings.images_dir.rglob("*") if p.is_file()]
        assert len(stored) == len(ACCEPTED)
        for seed, (name, (make, _)) in enumerate(ACCEPTED.items()):
            hits = client.post("/search", files={"file": ("q", make(seed))}, data={"k": "1"}).json()[
                "results"
            ]
            assert hits[0]["id"] == ids[name], name

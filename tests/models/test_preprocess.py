from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from models import ImageDecodeError, ImageTooLargeError, decode_image, to_tensor
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers.images import encode, photo, png_header_only

WHITE = (255, 255, 255)


def test_exif_orientation_6_is_applied() -> None:
    stored = Image.new("RGB", (60, 40), (255, 0, 0))
    stored.paste((0, 0, 255), (30, 0, 60, 40))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    decoded = decode_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert (decoded.width, decoded.height) == (40, 60)
    assert decoded.image.size == (40, 60)
    top, bottom = decoded.image.getpixel((20, 5)), decoded.image.getpixel((20, 55))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # the stored left (red) side is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_survives_downscaling() -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    decoded = decode_image(encode(photo((300, 200)), "JPEG", exif=exif.tobytes()), max_side=90)
    assert (decoded.width, decoded.height) == (200, 300)  # the original, upright
    assert decoded.image.size == (60, 90)


def _p_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.info["transparency"] = 0  # palette index 0 (the right half) is transparent
    return image


@pytest.mark.parametrize(
    ("image", "fmt", "left", "right"),
    [
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", (255, 0, 0), None),
        (Image.new("CMYK", (8, 8), (0, 0, 0, 255)), "TIFF", (0, 0, 0), None),
        (_p_with_transparency(), "PNG", (255, 0, 0), WHITE),
        (_p_with_transparency(), "GIF", (255, 0, 0), WHITE),
        (Image.merge("LA", [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 0)]), "PNG", WHITE, None),
        (Image.new("RGBA", (8, 8), (0, 0, 255, 0)), "PNG", WHITE, None),
        (Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG", (127, 127, 127), None),
        (Image.new("1", (8, 8), 1), "PNG", WHITE, None),
        (Image.new("L", (8, 8), 7), "BMP", (7, 7, 7), None),
        (Image.new("I;16", (8, 8), 65535), "PNG", WHITE, None),
        (Image.new("I;16", (8, 8), 32896), "PNG", (128, 128, 128), None),  # scaled, not clipped at 255
        (Image.new("RGB", (8, 8), (10, 200, 30)), "WEBP", None, None),
    ],
    ids=[
        "cmyk-jpeg",
        "cmyk-tiff",
        "p-trns-png",
        "p-trns-gif",
        "la",
        "rgba",
        "rgba-half",
        "1",
        "l",
        "i16",
        "i16-mid",
        "webp",
    ],
)
def test_any_mode_becomes_rgb(
    image: Image.Image, fmt: str, left: tuple[int, ...] | None, right: tuple[int, ...] | None
) -> None:
    decoded = decode_image(encode(image, fmt))
    assert decoded.image.mode == "RGB"
    assert decoded.format == fmt
    assert decoded.image.size == image.size
    pixels = np.asarray(decoded.image).astype(int)
    for expected, x in ((left, 1), (right, 6)):
        if expected is not None:
            np.testing.assert_allclose(pixels[4, x], expected, atol=3 if fmt == "JPEG" else 1)


def test_gif_decodes_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    red = decode_image(data).image.getpixel((8, 8))
    assert isinstance(red, tuple) and red[0] > 200 and red[2] < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_an_error(fmt: str) -> None:
    data = encode(photo((200, 150), seed=3), fmt)
    with pytest.raises(ImageDecodeError, match=f"truncated or corrupt {fmt}"):
        decode_image(data[: len(data) // 2])


def test_truncated_images_are_never_loaded_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode(photo(), "PNG"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is plain text and not a picture\n" * 10, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG|not an image|corrupt"),
        (encode(photo(), "TGA"), "not an image"),  # headerless formats are not even tried
    ],
    ids=["empty", "text", "broken-png", "tga"],
)
def test_non_images_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_bomb_header_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load

    def load(image: ImageFile.ImageFile) -> object:
        decoded.append(image)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(ImageTooLargeError):
        decode_image(png_header_only(20_000, 20_000))  # 400 Mpx: 50 MB even at 1 bit per pixel
    assert decoded == [], "the pixels were decoded before the size was checked"
    assert decode_image(encode(photo(), "PNG")).width == 96 and decoded  # the probe does see a real decode


def test_our_pixel_limit_names_the_size() -> None:
    # 110 Mpx: under PIL's own hard limit, so it is our header check that refuses it.
    with pytest.raises(
        ImageTooLargeError, match=r"11000x10000 = 110000000 pixels, above the limit of 100000000"
    ):
        decode_image(png_header_only(11_000, 10_000))
    with pytest.raises(ImageTooLargeError, match="above the limit of 1000"):
        decode_image(encode(photo((40, 30)), "PNG"), max_pixels=1000)


def test_too_large_is_a_decode_error() -> None:
    assert issubclass(ImageTooLargeError, ImageDecodeError)
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((300, 200), 150, (150, 100)),
        ((200, 300), 150, (100, 150)),
        ((30, 20), 150, (150, 100)),
        ((1000, 3), 64, (64, 1)),
        ((120, 120), 120, (120, 120)),
    ],
    ids=["landscape", "portrait", "upscaled", "sliver", "unchanged"],
)
def test_max_side_resize_keeps_aspect_ratio(
    size: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    decoded = decode_image(encode(photo(size), "PNG"), max_side=max_side)
    assert decoded.image.size == expected
    assert (decoded.width, decoded.height) == size


def test_jpeg_draft_decoding_matches_a_full_decode() -> None:
    data = encode(photo((2000, 1000), seed=5), "JPEG", quality=95)
    fast = decode_image(data, max_side=320).image
    full = decode_image(data).image.resize((320, 160), Image.Resampling.BICUBIC)
    assert fast.size == (320, 160)
    diff = np.abs(np.asarray(fast, dtype=float) - np.asarray(full, dtype=float))
    assert diff.mean() < 2.0


def test_to_tensor_normalises_without_cropping() -> None:
    tensor = to_tensor(Image.new("RGB", (100, 50), (128, 128, 128)), max_side=64)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 32, 64)
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(tensor.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5, rtol=0)


def test_to_tensor_accepts_other_modes() -> None:
    assert to_tensor(Image.new("L", (20, 40), 50), max_side=32).shape == (3, 32, 16)

"""GPU decoding's parts: routing, EXIF orientation and resizing match the CPU path; nvJPEG on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import Encoder, decode_image
from models.device_decode import decode_jpegs, orient, resize_pixels, routes_to_device
from models.preprocess import (
    _TRANSPOSE_FOR_ORIENTATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalise_pixels,
    pixels_from_image,
    probe_image,
    resize_long_side,
    to_tensor,
)
from tests.helpers.images import encode, photo

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pil(orientation: int) -> None:
    picture = photo((7, 5), seed=orientation)
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    expected = picture.transpose(transpose) if transpose is not None else picture
    assert torch.equal(orient(_chw(picture), orientation), _chw(expected))


def test_resize_is_close_to_pil_bicubic() -> None:
    picture = photo((384, 256), seed=3)
    ours = resize_pixels(_chw(picture)[None], 320)[0]
    pil = _chw(resize_long_side(picture, 320))
    assert ours.shape == pil.shape == (3, 213, 320)
    assert (ours.int() - pil.int()).abs().float().mean() < 1.0


def test_to_tensor_is_pixels_then_normalise_bit_for_bit() -> None:
    picture = photo((100, 70), seed=5)
    scaled = np.asarray(resize_long_side(picture, 64), dtype=np.float32) / 255.0
    array = (scaled - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    reference = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))
    assert torch.equal(to_tensor(picture, 64), reference)
    assert torch.equal(normalise_pixels(pixels_from_image(picture, 64)), reference)


def test_only_complete_rgb_or_grey_jpegs_go_to_the_gpu() -> None:
    rgb = encode(photo(), "JPEG")
    grey = encode(photo().convert("L"), "JPEG")
    cmyk = encode(photo().convert("CMYK"), "JPEG")
    progressive = encode(photo(), "JPEG", progressive=True)
    assert routes_to_device(probe_image(rgb), rgb)
    assert routes_to_device(probe_image(grey), grey)
    assert routes_to_device(probe_image(progressive), progressive)
    assert routes_to_device(probe_image(rgb + b"appended"), rgb + b"appended")
    assert not routes_to_device(probe_image(cmyk), cmyk)
    truncated = rgb[: len(rgb) - 200]
    assert not routes_to_device(probe_image(truncated), truncated)
    png = encode(photo(), "PNG")
    assert not routes_to_device(probe_image(png), png)


def test_probe_reads_the_upright_size_without_decoding() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(photo((60, 40)), "JPEG", exif=exif.tobytes())
    probe = probe_image(data)
    assert (probe.format, probe.width, probe.height, probe.orientation) == ("JPEG", 40, 60, 6)


@pytest.mark.gpu
@cuda
def test_nvjpeg_decodes_close_to_pil_and_refuses_what_it_cannot_read() -> None:
    device = torch.device("cuda")
    good = [encode(photo((384, 256), seed=i), "JPEG", quality=90) for i in range(3)]
    decoded = decode_jpegs([*good, b"\xff\xd8not a jpeg"], device)
    assert decoded[-1] is None
    for data, tensor in zip(good, decoded, strict=False):
        assert tensor is not None and tensor.device.type == "cuda"
        reference = _chw(decode_image(data).image)
        assert (tensor.cpu().int() - reference.int()).abs().float().mean() < 2.0


@pytest.mark.gpu
@cuda
def test_gpu_pixels_give_descriptors_close_to_cpu_ones(tiny_encoder: Encoder) -> None:
    from models import build_encoder

    gpu = build_encoder("tiny_random", max_side=64, device="cuda")
    datas = [encode(photo((384, 256), seed=i), "JPEG", quality=90) for i in range(8)]
    decoded = decode_jpegs(datas, gpu.device)
    on_gpu = resize_pixels(torch.stack([t for t in decoded if t is not None]), 64)
    on_cpu = torch.stack([pixels_from_image(decode_image(d, max_side=64).image, 64) for d in datas])
    cosine = (gpu.embed_pixels(on_gpu) * tiny_encoder.embed_pixels(on_cpu)).sum(axis=1)
    assert cosine.min() > 0.98

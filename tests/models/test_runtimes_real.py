"""Each installed runtime against torch fp32 on real photos with the real Lite0 encoder (cosine bound)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import Encoder, build_encoder, decode_image, to_tensor
from models.backbones import build_backbone
from models.runtimes import FP32_TOLERANCE, RuntimeContext, available_runtimes, get_runtime
from models.runtimes.int8 import calibrate
from tests.helpers.paths import COREL

pytestmark = pytest.mark.slow

CLASSES = ("beaches", "bus", "dinosaurs", "flowers", "horses", "mountains_and_snow")


def photos(corel: Path, first: int, count: int) -> list[Image.Image]:
    """`count` photos of each class from index `first` on: both orientations, six kinds of scene."""
    paths = [p for c in CLASSES for p in sorted((corel / c).glob("*.jpg"))[first : first + count]]
    return [decode_image(p.read_bytes(), max_side=320).image for p in paths]


def encoder(runtime: str, cache: Path) -> Encoder:
    return build_encoder(runtime=runtime, runtime_cache=cache, device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runtime cache for the module: OpenVINO fp32 and bf16 share one conversion, as in the product."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """torch fp32 vectors of the compared photos, built once for the module."""
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K is not at {COREL}")
    return build_encoder(device="cpu").embed(photos(COREL, 0, 2))


@pytest.mark.parametrize(
    "name", [n for n in available_runtimes() if n != "torch" and get_runtime(n).fingerprint_tag is None]
)
def test_fp32_compatible_runtime_matches_torch_on_corel(
    corel: Path, name: str, cache: Path, reference: np.ndarray
) -> None:
    if get_runtime(name).missing() is not None:
        pytest.skip(str(get_runtime(name).missing()))
    other = encoder(name, cache)
    cosines = (other.embed(photos(corel, 0, 2)) * reference).sum(axis=1)
    assert cosines.min() >= FP32_TOLERANCE.min_cosine, cosines
    assert cosines.mean() >= FP32_TOLERANCE.mean_cosine, cosines
    assert other.fingerprint == build_encoder(device="cpu").fingerprint


def test_int8_calibrated_on_other_photos_is_close_but_tagged(
    corel: Path, cache: Path, reference: np.ndarray
) -> None:
    """Calibrated on photos that are not the ones compared; int8 is outside the fp32 tolerance by design
    (issue 17 measured min 0.93 / mean 0.99 on Corel), so only a loose bound that catches a broken model."""
    if get_runtime("openvino_int8").missing() is not None:
        pytest.skip(str(get_runtime("openvino_int8").missing()))
    built = build_backbone("tf_efficientnet_lite0")
    context = RuntimeContext(f"tf_efficientnet_lite0@{built.weights_id}", cache, None)
    samples = [to_tensor(image, 320) for image in photos(corel, 50, 3)]
    ids = [str(i) for i in range(len(samples))]
    calibrate(built.module.eval(), samples, context, picture_ids=ids, max_side=320, source="corel 50-52")
    int8 = encoder("openvino_int8", cache)
    cosines = (int8.embed(photos(corel, 0, 2)) * reference).sum(axis=1)
    assert cosines.mean() >= 0.95, cosines
    assert int8.fingerprint.startswith(build_encoder(device="cpu").fingerprint + "/rt-ov-int8#")

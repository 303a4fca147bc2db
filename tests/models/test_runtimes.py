"""Runtimes on the tiny backbone: parity with torch fp32, the fingerprint rule, caching, auto's choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import models.runtimes.openvino as ov_runtime
from models import Encoder, EncoderConfigError, build_encoder
from models.backbones import build_backbone
from models.preprocess import to_tensor
from models.runtimes import FP32_TOLERANCE, RuntimeContext, available_runtimes, choose_runtime, get_runtime
from models.runtimes.cpu import has_fast_bf16
from models.runtimes.int8 import calibrate
from tests.helpers.images import photo

FP32_COMPATIBLE = [name for name in available_runtimes() if get_runtime(name).fingerprint_tag is None]


def pictures() -> list[Image.Image]:
    return [photo((96, 64), seed=i) for i in range(6)] + [photo((64, 96), seed=50 + i) for i in range(3)]


def tiny(runtime: str, cache: Path | None = None, *, compile_model: bool = False) -> Encoder:
    return build_encoder(
        "tiny_random",
        "gap",
        max_side=64,
        device="cpu",
        runtime=runtime,
        runtime_cache=cache,
        compile_model=compile_model,
    )


def usable(name: str) -> None:
    reason = get_runtime(name).missing()
    if reason is not None:
        pytest.skip(f"{name}: {reason}")


@pytest.mark.parametrize("name", FP32_COMPATIBLE)
def test_fp32_compatible_runtimes_stay_within_the_tolerance_and_share_the_fingerprint(
    name: str, tmp_path: Path
) -> None:
    usable(name)
    reference, encoder = tiny("torch"), tiny(name, tmp_path)
    cosines = (encoder.embed(pictures()) * reference.embed(pictures())).sum(axis=1)
    assert cosines.min() >= FP32_TOLERANCE.min_cosine
    assert cosines.mean() >= FP32_TOLERANCE.mean_cosine
    assert encoder.fingerprint == reference.fingerprint
    assert encoder.describe()["runtime"] == name


@pytest.mark.parametrize("name", FP32_COMPATIBLE)
def test_multi_scale_gem_and_regions_run_on_every_runtime(name: str, tmp_path: Path) -> None:
    usable(name)
    scales = (1.0, 0.75)
    reference = build_encoder("tiny_random", "gem", max_side=64, device="cpu", scales=scales)
    encoder = build_encoder(
        "tiny_random", "gem", max_side=64, device="cpu", scales=scales, runtime=name, runtime_cache=tmp_path
    )
    image = photo((96, 64), seed=3)
    box = (10.0, 5.0, 70.0, 60.0)
    assert float(encoder.embed_region(image, box) @ reference.embed_region(image, box)) >= 0.99
    assert float((encoder.embed([image]) * reference.embed([image])).sum()) >= 0.99


def test_int8_is_refused_without_a_calibration_and_names_the_fix(tmp_path: Path) -> None:
    usable("openvino_int8")
    with pytest.raises(EncoderConfigError, match="cbir optimize"):
        tiny("openvino_int8", tmp_path)


def test_int8_tags_the_fingerprint_with_its_calibration(tmp_path: Path) -> None:
    usable("openvino_int8")
    fp32 = tiny("torch")
    samples = [to_tensor(image, 64) for image in pictures()]
    ids = [f"picture-{i}" for i in range(len(samples))]
    built = build_backbone("tiny_random")
    context = RuntimeContext(f"tiny_random@{built.weights_id}", tmp_path, None)
    first = calibrate(built.module.eval(), samples, context, picture_ids=ids, max_side=64, source="test")
    again = calibrate(built.module.eval(), samples, context, picture_ids=ids[::-1], max_side=64, source="t")
    assert first.calibration_id == again.calibration_id  # the same pictures, in any order
    int8 = tiny("openvino_int8", tmp_path)
    assert int8.fingerprint == f"{fp32.fingerprint}/rt-ov-int8#{first.calibration_id}"
    assert (int8.embed(pictures()) * fp32.embed(pictures())).sum(axis=1).mean() > 0.9  # it does work
    other = calibrate(built.module.eval(), samples[:8], context, picture_ids=ids[:8], max_side=64, source="")
    assert tiny("openvino_int8", tmp_path).fingerprint.endswith(other.calibration_id)


def test_too_few_calibration_pictures_are_refused(tmp_path: Path) -> None:
    usable("openvino_int8")
    built = build_backbone("tiny_random")
    context = RuntimeContext("tiny_random@x", tmp_path, None)
    with pytest.raises(EncoderConfigError, match="at least"):
        calibrate(built.module, [to_tensor(photo(), 64)], context, picture_ids=["a"], max_side=64, source="")


def test_a_second_start_reads_the_converted_model_instead_of_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usable("openvino")
    first = tiny("openvino", tmp_path).embed(pictures())
    assert list((tmp_path / "openvino").glob("*.xml"))

    def no_conversion(module: object) -> None:
        raise AssertionError("converted again although the runtime cache holds the model")

    monkeypatch.setattr(ov_runtime, "convert", no_conversion)
    np.testing.assert_allclose(tiny("openvino", tmp_path).embed(pictures()), first, atol=1e-6)


def test_static_shape_copies_give_the_dynamic_models_vectors(tmp_path: Path) -> None:
    usable("openvino")
    encoder = tiny("openvino", tmp_path)
    image = [photo((96, 64), seed=1)]
    dynamic = encoder.embed(image)
    for _ in range(ov_runtime.PROMOTE_AFTER + 1):
        static = encoder.embed(image)
    assert isinstance(encoder._backbone, ov_runtime.CompiledForward)
    assert encoder._backbone.static  # the shape got its static copy
    np.testing.assert_allclose(static, dynamic, atol=1e-5)


def test_auto_picks_the_highest_ranked_usable_runtime() -> None:
    import torch

    chosen = choose_runtime("auto", torch.device("cpu"))
    usable_ranks = [
        get_runtime(n).auto_rank for n in available_runtimes() if get_runtime(n).missing() is None
    ]
    assert chosen.missing() is None and chosen.auto_rank == max(usable_ranks)
    assert chosen.fingerprint_tag is None  # auto never changes the fingerprint


def test_an_isa_cap_below_bf16_turns_bf16_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not has_fast_bf16()
    assert get_runtime("openvino_bf16").missing() is not None


def test_unknown_runtime_and_compile_on_cpu_are_config_errors() -> None:
    with pytest.raises(EncoderConfigError, match="unknown runtime 'tensorrt'"):
        tiny("tensorrt")
    with pytest.raises(EncoderConfigError, match="CUDA only"):
        tiny("torch", compile_model=True)

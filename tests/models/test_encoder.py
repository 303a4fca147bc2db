from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import Encoder, EncoderConfigError, build_encoder, to_tensor
from tests.helpers.images import photo

ROOT = Path(__file__).resolve().parents[2]


def test_vectors_are_float32_l2_normalised_rows(tiny_encoder: Encoder) -> None:
    vectors = tiny_encoder.embed([photo(seed=i) for i in range(5)])
    assert vectors.shape == (5, tiny_encoder.dim) == (5, 16)
    assert vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert len({row.tobytes() for row in vectors}) == 5


def test_mixed_sizes_keep_input_order(tiny_encoder: Encoder) -> None:
    images = [
        photo((96, 64), 0),
        photo((64, 96), 1),
        photo((96, 64), 2),
        photo((30, 30), 3),
        photo((50, 200), 4),
    ]
    together = tiny_encoder.embed(images)
    one_by_one = np.concatenate([tiny_encoder.embed([image]) for image in images])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_batches_larger_than_batch_size(tiny_encoder: Encoder) -> None:
    images = [photo(seed=i) for i in range(tiny_encoder.batch_size * 2 + 3)]
    np.testing.assert_allclose(tiny_encoder.embed(images)[-1], tiny_encoder.embed(images[-1:])[0], atol=1e-6)


def test_empty_input(tiny_encoder: Encoder) -> None:
    assert tiny_encoder.embed([]).shape == (0, 16)


def test_deterministic_across_builds(tiny_encoder: Encoder) -> None:
    images = [photo(seed=7), photo((40, 80), seed=8)]
    again = build_encoder("tiny_random", "gap", max_side=64, device="cpu")
    np.testing.assert_array_equal(tiny_encoder.embed(images), again.embed(images))


def test_embed_tensors_matches_embed(tiny_encoder: Encoder) -> None:
    image = photo(seed=9)
    batch = to_tensor(image, tiny_encoder.max_side).unsqueeze(0)
    np.testing.assert_allclose(tiny_encoder.embed_tensors(batch), tiny_encoder.embed([image]), atol=1e-6)


@pytest.mark.parametrize(
    "bad", [torch.zeros(3, 64, 64), torch.zeros(1, 1, 64, 64), torch.zeros(1, 3, 8, 8).long()]
)
def test_embed_tensors_checks_its_input(tiny_encoder: Encoder, bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_encoder.embed_tensors(bad)


def test_fingerprint_names_what_made_the_vectors(tiny_encoder: Encoder) -> None:
    assert tiny_encoder.fingerprint == "tiny_random@random-seed0/gap/side64/pp1"
    assert build_encoder("tiny_random", "gap", max_side=64).fingerprint == tiny_encoder.fingerprint
    others = {
        build_encoder("tiny_random", "mac", max_side=64).fingerprint,
        build_encoder("tiny_random", "gap", max_side=96).fingerprint,
        build_encoder("tiny_random", "gem", max_side=64).fingerprint,
        build_encoder("tiny_random", "gem", max_side=64, head_options={"p": 4.0}).fingerprint,
    }
    assert len(others) == 4 and tiny_encoder.fingerprint not in others


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "import tests.helpers.backbones; from models import build_encoder; "
        "print(build_encoder('tiny_random', 'gem', max_side=64, device='cpu').fingerprint)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    here = build_encoder("tiny_random", "gem", max_side=64, device="cpu").fingerprint
    assert result.stdout.strip() == here
    assert here.startswith("tiny_random@random-seed0/gem(eps=1e-06,p=3.0)#")


def test_head_options_reach_the_head(tiny_encoder: Encoder) -> None:
    gem1 = build_encoder("tiny_random", "gem", max_side=64, head_options={"p": 1.0})
    images = [photo(seed=3)]
    np.testing.assert_allclose(gem1.embed(images), tiny_encoder.embed(images), atol=1e-4)


def test_describe(tiny_encoder: Encoder) -> None:
    described = tiny_encoder.describe()
    assert described["backbone"] == "tiny_random"
    assert described["head"] == "gap"
    assert described["weights_id"] == "random-seed0"
    assert described["dim"] == 16 and described["max_side"] == 64
    assert described["device"] == "cpu"
    assert described["fingerprint"] == tiny_encoder.fingerprint


def test_device_auto_is_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert build_encoder("tiny_random", max_side=64, device="auto").device.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_asking_for_absent_cuda_is_a_config_error(device: str) -> None:
    with pytest.raises(EncoderConfigError, match="CUDA is not available"):
        build_encoder("tiny_random", max_side=64, device=device)


@pytest.mark.parametrize("device", ["tpu", "mps", "gpu!"])
def test_unknown_device_is_a_config_error(device: str) -> None:
    with pytest.raises(EncoderConfigError, match="device"):
        build_encoder("tiny_random", max_side=64, device=device)


def test_bad_names_and_sizes_are_config_errors() -> None:
    with pytest.raises(EncoderConfigError, match=r"unknown backbone 'resnet9000'.*efficientnet_lite0"):
        build_encoder("resnet9000")
    with pytest.raises(EncoderConfigError, match="unknown head"):
        build_encoder("tiny_random", "avg")
    with pytest.raises(EncoderConfigError, match="max_side"):
        build_encoder("tiny_random", max_side=8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_vectors_are_close_to_cpu_vectors(tiny_encoder: Encoder) -> None:
    images = [photo(seed=i) for i in range(4)]
    gpu = build_encoder("tiny_random", max_side=64, device="cuda")
    assert gpu.fingerprint == tiny_encoder.fingerprint
    np.testing.assert_allclose(gpu.embed(images), tiny_encoder.embed(images), atol=2e-2)

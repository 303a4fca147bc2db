"""Corruptions: each does what its name says, stays in 0..1, and is reproducible from its generator."""

from __future__ import annotations

import pytest
import torch

from models.training import NOISE_KINDS, NoiseConfig, corrupt


def pictures() -> torch.Tensor:
    return torch.linspace(0.2, 0.8, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)


def draw(noise: NoiseConfig, seed: int = 0) -> torch.Tensor:
    return corrupt(pictures(), noise, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("jitter", [0.0, 1.0])
def test_shape_range_and_seed(kind: str, jitter: float) -> None:
    noise = NoiseConfig(kind, 0.4, jitter=jitter)
    out = draw(noise)
    assert out.shape == pictures().shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, draw(noise))
    if kind != "none" or jitter:
        assert not torch.equal(out, draw(noise, seed=1))


def test_none_without_jitter_is_the_identity() -> None:
    assert torch.equal(draw(NoiseConfig("none", 0.5, jitter=0.0)), pictures())


def test_masking_zeroes_that_fraction_of_whole_pixels() -> None:
    out = draw(NoiseConfig("masking", 0.3, jitter=0.0))
    dead = out == 0
    assert torch.equal(dead[:, :1].expand_as(dead), dead)  # all channels of a pixel at once
    assert 0.25 < float(dead.float().mean()) < 0.35
    kept = ~dead
    assert torch.equal(out[kept], pictures()[kept])


def test_salt_and_pepper_sets_pixels_to_black_or_white() -> None:
    out = draw(NoiseConfig("salt_pepper", 0.2, jitter=0.0))
    changed = out != pictures()
    assert 0.15 < float(changed.float().mean()) < 0.25
    assert set(out[changed].unique().tolist()) == {0.0, 1.0}


def test_gaussian_strength_is_the_standard_deviation() -> None:
    flat = torch.full((4, 1, 64, 64), 0.5)
    out = corrupt(flat, NoiseConfig("gaussian", 0.1, jitter=0.0), torch.Generator().manual_seed(0))
    assert abs(float((out - flat).std()) - 0.1) < 0.01


@pytest.mark.parametrize(
    ("options", "message"),
    [({"kind": "speckle"}, "unknown noise"), ({"strength": 1.5}, "strength"), ({"jitter": -1.0}, "jitter")],
)
def test_bad_noise_says_what_is_allowed(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseConfig(**options)  # type: ignore[arg-type]

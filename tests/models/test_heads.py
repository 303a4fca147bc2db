from __future__ import annotations

import json

import pytest
import torch

from models import EncoderConfigError, available_heads, register_head
from models.heads import Head, base, build_head


def _fmap() -> torch.Tensor:
    """(1, 2, 2, 2) with known values: channel 0 = 1,2,3,4; channel 1 = 0,0,0,8."""
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 8.0]]]])


@pytest.mark.parametrize("name", available_heads())
def test_every_head_pools_to_out_dim(name: str) -> None:
    head = build_head(name, in_channels=8).eval()
    assert head.name == name
    fmap = torch.rand(3, 8, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = head(fmap)
    assert out.shape == (3, head.out_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    json.dumps(head.config())  # goes into the fingerprint


@pytest.mark.parametrize("name", available_heads())
def test_every_head_handles_a_one_pixel_map_and_zeros(name: str) -> None:
    head = build_head(name, in_channels=4).eval()
    with torch.inference_mode():
        assert torch.isfinite(head(torch.zeros(2, 4, 1, 1))).all()
        assert torch.isfinite(head(torch.rand(1, 4, 1, 9))).all()


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("gap", {}, [2.5, 2.0]),
        ("mac", {}, [4.0, 8.0]),
        ("gem", {"p": 3.0}, [(100 / 4) ** (1 / 3), (512 / 4) ** (1 / 3)]),  # zeros clamp to eps, ~0 after ^3
    ],
)
def test_heads_match_a_hand_computation(name: str, kwargs: dict[str, float], expected: list[float]) -> None:
    with torch.inference_mode():
        out = build_head(name, 2, **kwargs)(_fmap())
    torch.testing.assert_close(out, torch.tensor([expected]), rtol=1e-5, atol=1e-5)


def test_gem_with_p_1_is_gap() -> None:
    fmap = torch.rand(2, 6, 4, 3, generator=torch.Generator().manual_seed(1)) + 0.01
    with torch.inference_mode():
        torch.testing.assert_close(build_head("gem", 6, p=1.0)(fmap), build_head("gap", 6)(fmap))


def test_gem_p_is_learnable_and_hashed() -> None:
    head = build_head("gem", 4)
    assert [name for name, p in head.named_parameters() if p.requires_grad] == ["p"]
    before = head.state_hash()
    with torch.no_grad():
        head.p.fill_(2.0)  # type: ignore[operator]
    assert head.state_hash() != before
    assert head.config()["p"] == 2.0
    assert build_head("gap", 4).state_hash() is None


def test_unknown_head_lists_the_known_ones() -> None:
    with pytest.raises(EncoderConfigError, match=r"unknown head 'nonesuch'.*gap, gem, mac, netvlad, spp"):
        build_head("nonesuch", 8)


def test_bad_head_options_are_a_config_error() -> None:
    with pytest.raises(EncoderConfigError, match="gap"):
        build_head("gap", 8, p=3.0)
    with pytest.raises(EncoderConfigError, match="p > 0"):
        build_head("gem", 8, p=0.0)


def test_a_new_head_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", base._REGISTRY.copy())

    @register_head("sum_for_test")
    class Sum(Head):
        def forward(self, fmap: torch.Tensor) -> torch.Tensor:
            return fmap.sum(dim=(2, 3))

    assert "sum_for_test" in available_heads()
    assert build_head("sum_for_test", 2)(_fmap()).tolist() == [[10.0, 8.0]]
    with pytest.raises(ValueError, match="already registered"):
        register_head("sum_for_test")(Sum)

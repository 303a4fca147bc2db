"""The fitter registry: every head that needs fitting has a fitter under its name, and each one fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.learn.fit import FitOptions, FitReport, fit_parameters
from app.learn.fitters import FITTERS
from models import EncoderConfigError, build_encoder, decode_image, to_tensor
from models.encoder import Encoder
from models.heads import available_heads, build_head
from tests.helpers.images import image_bytes


def fittable_heads() -> list[str]:
    return [name for name in available_heads() if build_head(name, 8).needs_fitting]


def feature_maps(encoder: Encoder, images: int) -> list[list[torch.Tensor]]:
    """Per image, its maps at every scale, as `cbir fit` reads them."""
    decoded = [decode_image(image_bytes(seed), max_side=64, max_pixels=10**6) for seed in range(images)]
    return [encoder.feature_maps(to_tensor(d.image, encoder.max_side)[None]) for d in decoded]


@pytest.mark.parametrize("head", available_heads())
def test_a_head_that_needs_fitting_has_a_fitter_and_only_such_heads_do(head: str) -> None:
    assert (head in FITTERS) == (head in fittable_heads())


@pytest.mark.parametrize("head", FITTERS.names())
def test_each_fitter_fits_its_head_on_feature_maps(head: str) -> None:
    encoder = build_encoder("tiny_random", head, max_side=64, device="cpu", require_fitted=False)
    assert not encoder.head.is_fitted
    before = {key: value.clone() for key, value in encoder.head.state_dict().items()}
    maps = feature_maps(encoder, 12)
    report = FitReport(path=Path("unused"), file_id="", images=len(maps))
    params = fit_parameters(encoder, maps, FitOptions(), source="test", report=report)
    assert encoder.head.is_fitted
    assert report.descriptors > 0
    assert set(params.head_state) == set(before)
    assert any(not torch.equal(params.head_state[key], before[key]) for key in before)


def test_a_second_fitter_under_one_name_is_refused() -> None:
    [name, *_] = FITTERS.names()
    with pytest.raises(ValueError, match=f"fitter {name!r} is already registered"):
        FITTERS.register(name)(FITTERS.get(name))


def test_an_unknown_fitter_names_the_known_ones() -> None:
    with pytest.raises(
        EncoderConfigError, match=f"unknown fitter 'nope'; known: {', '.join(FITTERS.names())}"
    ):
        FITTERS.get("nope")


def test_fit_refuses_a_head_without_a_fitter(monkeypatch: pytest.MonkeyPatch) -> None:
    [head, *_] = fittable_heads()
    encoder = build_encoder("tiny_random", head, max_side=64, device="cpu", require_fitted=False)
    monkeypatch.setattr(FITTERS, "_entries", {})
    with pytest.raises(EncoderConfigError, match=f"does not know how to fit head {head!r}"):
        fit_parameters(encoder, feature_maps(encoder, 1), FitOptions(), source="test")
    assert not encoder.head.is_fitted

"""The encoder-kind registry (app/encoders.py): one table for what CBIR_ENCODER may name."""

from __future__ import annotations

from pathlib import Path

import pytest

import app.encoders as encoders
from app.encoders import BACKBONE_KIND, ENCODER_KINDS, EncoderKind, encoder_from_settings, normalise_encoder
from models import EncoderConfigError, ImageEncoder
from tests.helpers.settings import tiny_settings

KINDS = ENCODER_KINDS.names()


@pytest.mark.parametrize("name", KINDS)
def test_an_unknown_encoder_lists_how_to_write_each_kind(name: str, tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path).model_copy(update={"encoder": "vae:x.pt"})
    with pytest.raises(EncoderConfigError, match=r"unknown encoder 'vae:x\.pt'") as raised:
        encoder_from_settings(settings)
    assert ENCODER_KINDS.get(name).usage in str(raised.value)


@pytest.mark.parametrize("name", KINDS)
def test_a_kind_is_written_with_an_argument_exactly_when_it_takes_one(name: str, tmp_path: Path) -> None:
    kind = ENCODER_KINDS.get(name)
    wrong = name if kind.takes_argument else f"{name}:something"
    settings = tiny_settings(tmp_path).model_copy(update={"encoder": wrong})
    with pytest.raises(EncoderConfigError, match="unknown encoder"):
        encoder_from_settings(settings)


def test_unset_and_backbone_build_the_backbone_and_head_settings(tmp_path: Path) -> None:
    unset = encoder_from_settings(tiny_settings(tmp_path))
    named = encoder_from_settings(tiny_settings(tmp_path).model_copy(update={"encoder": BACKBONE_KIND}))
    assert unset.fingerprint == named.fingerprint and "tiny_random" in unset.fingerprint


def test_arguments_are_normalised_by_their_kind_and_the_rest_kept_as_written(tmp_path: Path) -> None:
    assert normalise_encoder(None) is None
    assert normalise_encoder(BACKBONE_KIND) == BACKBONE_KIND
    assert normalise_encoder("vae:x.pt") == "vae:x.pt", "refused when the encoder is built, not here"
    assert normalise_encoder(f"dae:{tmp_path}/../m.pt") == f"dae:{tmp_path.parent.resolve() / 'm.pt'}"


def test_a_new_kind_is_one_registration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built: list[str] = []

    def build(argument: str, settings: object) -> ImageEncoder:
        built.append(argument)
        return encoder_from_settings(tiny_settings(tmp_path))

    kinds = ENCODER_KINDS.copy()
    kinds.add("echo", EncoderKind(usage="echo:WORD", what="a test kind", build=build, takes_argument=True))
    monkeypatch.setattr(encoders, "ENCODER_KINDS", kinds)
    encoder_from_settings(tiny_settings(tmp_path).model_copy(update={"encoder": "echo: hello "}))
    assert built == ["hello"]
    with pytest.raises(ValueError, match="already registered"):
        kinds.add("dae", ENCODER_KINDS.get("dae"))

"""The autoencoder network, its preprocessing, its checkpoint file and its encoder interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import EncoderConfigError, ImageEncoder, load_autoencoder
from models.autoencoder import (
    AutoencoderConfig,
    AutoencoderEncoder,
    ConvAutoencoder,
    fingerprint_of,
    image_to_tensor,
    read_checkpoint,
    write_checkpoint,
)
from tests.helpers.dae import TINY, train_tiny
from tests.helpers.images import photo


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dae") / "tiny.pt"
    train_tiny(path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> AutoencoderEncoder:
    return load_autoencoder(checkpoint, device="cpu")


@pytest.mark.parametrize(
    ("size", "channels", "sides"),
    [(16, 1, [16, 8]), (28, 1, [28, 14, 7]), (32, 3, [32, 16, 8]), (96, 3, [96, 48, 24, 12, 6])],
)
def test_decoder_rebuilds_the_input_shape(size: int, channels: int, sides: list[int]) -> None:
    config = AutoencoderConfig(input_size=size, channels=channels, code_size=12, width=4)
    assert config.sides() == sides
    model = ConvAutoencoder(config).eval()
    x = torch.rand(2, channels, size, size)
    assert model.encode(x).shape == (2, 12)
    assert model(x).shape == x.shape


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 2}, "channels must be 1"),
        ({"input_size": 8}, "input size must be"),
        ({"input_size": 100}, "cannot be halved"),
        ({"code_size": 1}, "code size"),
        ({"width": 1000}, "width"),
    ],
)
def test_bad_configuration_says_what_is_allowed(options: dict[str, int], message: str) -> None:
    with pytest.raises(EncoderConfigError, match=message):
        AutoencoderConfig(**options)


def test_config_round_trip_refuses_unknown_keys() -> None:
    assert AutoencoderConfig.from_dict(TINY.as_dict()) == TINY
    with pytest.raises(EncoderConfigError, match="unknown autoencoder settings"):
        AutoencoderConfig.from_dict({**TINY.as_dict(), "depth": 3})


def test_preprocessing_squeezes_the_whole_picture_into_the_square() -> None:
    wide = photo((120, 40))
    grey = image_to_tensor(wide, TINY)
    assert grey.shape == (1, 16, 16) and grey.dtype == torch.float32
    assert float(grey.min()) >= 0.0 and float(grey.max()) <= 1.0
    colour = image_to_tensor(wide, AutoencoderConfig(input_size=32, channels=3, code_size=8, width=4))
    assert colour.shape == (3, 32, 32)
    # Grey is the luminance of the colour picture: a pure grey picture keeps its exact value.
    flat = Image.new("RGB", (16, 16), (77, 77, 77))
    assert torch.allclose(image_to_tensor(flat, TINY), torch.full((1, 16, 16), 77 / 255))


def test_encoder_meets_the_app_interface(encoder: AutoencoderEncoder) -> None:
    assert isinstance(encoder, ImageEncoder)
    assert encoder.dim == TINY.code_size
    assert encoder.max_side == TINY.input_size
    assert encoder.fingerprint.startswith("dae@") and "/code8/in1x16/" in encoder.fingerprint
    pictures = [photo(seed=seed) for seed in range(5)]
    vectors = encoder.embed(pictures)
    assert vectors.shape == (5, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # One at a time or in a batch: batch norm is frozen, so a picture's vector does not depend on its batch.
    np.testing.assert_allclose(encoder.embed(pictures[2:3])[0], vectors[2], atol=1e-5)
    np.testing.assert_allclose(encoder.embed_tensors(encoder.prepare(pictures)), vectors, atol=1e-6)
    assert encoder.embed([]).shape == (0, 8)
    described = encoder.describe()
    assert described["kind"] == "autoencoder" and described["fingerprint"] == encoder.fingerprint
    assert described["training"]["epochs_run"] == 1


def test_embed_tensors_checks_its_input(encoder: AutoencoderEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        encoder.embed_tensors(torch.rand(2, 3, 16, 16))


def test_reconstruct_gives_pictures_of_the_network_size(encoder: AutoencoderEncoder) -> None:
    [rebuilt] = encoder.reconstruct([photo((64, 48))])
    assert rebuilt.size == (16, 16) and rebuilt.mode == "L"
    assert encoder.reconstruct([]) == []


def test_fingerprint_follows_every_weight() -> None:
    model = ConvAutoencoder(TINY)
    state = model.state_dict()
    before = fingerprint_of(TINY, state)
    assert fingerprint_of(TINY, state) == before
    state["encoder.0.weight"][0, 0, 0, 0] += 1e-3
    assert fingerprint_of(TINY, state) != before


def test_missing_checkpoint_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(EncoderConfigError, match=r"nowhere\.pt.*cbir train autoencoder"):
        load_autoencoder(missing)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EncoderConfigError, match=r"garbage\.pt is not a readable autoencoder checkpoint"):
        load_autoencoder(garbage)
    other = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(EncoderConfigError, match="not a cbir autoencoder checkpoint"):
        load_autoencoder(other)


def test_edited_weights_are_detected(checkpoint: Path, tmp_path: Path) -> None:
    payload = read_checkpoint(checkpoint)
    payload["model"]["encoder.0.weight"] += 0.5
    edited = tmp_path / "edited.pt"
    write_checkpoint(edited, payload)
    with pytest.raises(EncoderConfigError, match="do not match the fingerprint"):
        load_autoencoder(edited)

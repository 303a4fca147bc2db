"""NetVLAD, SPP, the fitted-parameters file, and the Encoder's projections, scales and region descriptors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import Encoder, EncoderConfigError, build_encoder, build_head
from models.fitted import FittedParameters, load_fitted, save_fitted
from models.heads.netvlad import NetVLAD
from models.projection import Projection
from tests.helpers.images import photo


def _points(*columns: tuple[float, float]) -> torch.Tensor:
    """A (1, 2, 1, N) map whose N positions are the given 2-d descriptors."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(1, 2, 1, len(columns))


def test_netvlad_matches_a_hand_computation_with_hard_assignment() -> None:
    head = build_head("netvlad", 2, clusters=2)
    assert isinstance(head, NetVLAD)
    head.set_centroids(torch.tensor([[0.5, 0.0], [0.0, 0.5]]), alpha=1000.0)
    # Two descriptors near centroid 0, one near centroid 1 (already unit length, as NetVLAD makes them).
    with torch.inference_mode():
        out = head(_points((1.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    # Cluster 0: 2*(1,0) - 2*(0.5,0) = (1,0); cluster 1: (0,1) - (0,0.5) = (0,0.5) -> intra-normalised (0,1).
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0, 1.0]]), atol=1e-5, rtol=0)


def test_netvlad_init_is_the_papers_and_assigns_by_distance() -> None:
    head = build_head("netvlad", 3, clusters=2)
    assert isinstance(head, NetVLAD)
    centroids = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])
    head.set_centroids(centroids, alpha=7.0)
    torch.testing.assert_close(head.assign.weight[:, :, 0, 0], 14.0 * centroids)
    assert head.assign.bias is not None
    torch.testing.assert_close(head.assign.bias, -7.0 * centroids.pow(2).sum(1))
    x = F.normalize(torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(3)), dim=1)
    logits = head.assign(x)
    distances = -7.0 * ((x[:, None] - centroids[None, :, :, None, None]) ** 2).sum(2)
    # Equal up to the per-position constant alpha*|x|^2, which the softmax ignores.
    torch.testing.assert_close(F.softmax(logits, 1), F.softmax(distances, 1), atol=1e-5, rtol=0)


def test_netvlad_is_unfitted_until_fitted_parameters_are_loaded() -> None:
    head = build_head("netvlad", 4, clusters=3)
    assert head.needs_fitting and not head.is_fitted
    assert head.out_dim == 12
    assert head.config() == {"clusters": 3}
    fitted = build_head("netvlad", 4, clusters=3)
    assert isinstance(fitted, NetVLAD)
    fitted.set_centroids(torch.eye(3, 4), alpha=5.0)
    head.load_state_dict(fitted.state_dict())
    assert head.is_fitted
    assert head.state_hash() == fitted.state_hash()
    with pytest.raises(EncoderConfigError, match="clusters"):
        build_head("netvlad", 4, clusters=0)
    with pytest.raises(EncoderConfigError, match="shape"):
        fitted.set_centroids(torch.eye(2, 4), alpha=5.0)


def test_spp_matches_a_hand_computation_and_any_aspect_ratio_gives_one_length() -> None:
    fmap = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    head = build_head("spp", 2, levels=[1, 2])
    with torch.inference_mode():
        out = head(fmap)[0]
    level1 = F.normalize(torch.tensor([1.5, 5.5]), dim=0)
    level2 = F.normalize(torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7]), dim=0)
    torch.testing.assert_close(out, torch.cat([level1, level2]) / 2**0.5)
    with torch.inference_mode():
        assert head(torch.rand(1, 2, 3, 11)).shape == head(torch.rand(1, 2, 9, 2)).shape == (1, 10)
    with pytest.raises(EncoderConfigError, match="levels"):
        build_head("spp", 2, levels=[0])


def test_an_unfitted_netvlad_encoder_is_refused_with_what_to_do() -> None:
    with pytest.raises(EncoderConfigError, match="cbir fit"):
        build_encoder("tiny_random", "netvlad", max_side=64, device="cpu")
    unfitted = build_encoder("tiny_random", "netvlad", max_side=64, device="cpu", require_fitted=False)
    assert unfitted.dim == 8 * 16


def _fitted_file(
    tmp_path: Path, *, projection_dim: int | None = 6, scales: list[float] | None = None
) -> Path:
    head = build_head("netvlad", 16, clusters=2)
    assert isinstance(head, NetVLAD)
    head.set_centroids(F.normalize(torch.rand(2, 16, generator=torch.Generator().manual_seed(1)), dim=1), 9.0)
    projection = None
    if projection_dim is not None:
        generator = torch.Generator().manual_seed(2)
        projection = Projection(
            torch.rand(32, generator=generator), torch.randn(32, projection_dim, generator=generator), -0.5
        )
    params = FittedParameters(
        backbone="tiny_random",
        weights_id="random-seed0",
        head="netvlad",
        head_config=head.config(),
        max_side=64,
        scales=scales or [1.0],
        head_state=head.state_dict(),
        projection=projection,
        fitted_on={"images": 3},
    )
    path = tmp_path / "fitted.safetensors"
    save_fitted(params, path)
    return path


def test_fitted_file_round_trips_and_names_the_encoder(tmp_path: Path) -> None:
    path = _fitted_file(tmp_path)
    params = load_fitted(path)
    assert params.head_config == {"clusters": 2}
    assert params.fitted_on == {"images": 3}
    assert params.projection is not None and params.projection.out_dim == 6
    encoder = build_encoder("tiny_random", "netvlad", max_side=64, device="cpu", fitted=path)
    assert encoder.head.is_fitted
    assert encoder.dim == 6
    assert f"/fit#{params.file_id}" in encoder.fingerprint
    assert "proj(dim=6,eigen_power=-0.5)" in encoder.fingerprint
    vectors = encoder.embed([photo(seed=1), photo(seed=2)])
    assert vectors.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Refitting (here: other projection) is another file, so another fingerprint.
    other = build_encoder(
        "tiny_random",
        "netvlad",
        max_side=64,
        device="cpu",
        fitted=_fitted_file(tmp_path / "b", projection_dim=5),
    )
    assert other.fingerprint != encoder.fingerprint


def test_fitted_file_for_another_configuration_is_refused(tmp_path: Path) -> None:
    path = _fitted_file(tmp_path)
    with pytest.raises(EncoderConfigError, match=r"max side 64 \(configured: 96\)"):
        build_encoder("tiny_random", "netvlad", max_side=96, device="cpu", fitted=path)
    with pytest.raises(EncoderConfigError, match="head 'netvlad' \\(configured: 'gap'\\)"):
        build_encoder("tiny_random", "gap", max_side=64, device="cpu", fitted=path)
    with pytest.raises(EncoderConfigError, match="scales"):
        build_encoder("tiny_random", "netvlad", max_side=64, device="cpu", scales=(1.0, 0.5), fitted=path)


def test_damaged_or_foreign_fitted_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EncoderConfigError, match="cbir fit"):
        load_fitted(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(EncoderConfigError, match="not a file written by `cbir fit`"):
        load_fitted(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(EncoderConfigError, match="format"):
        load_fitted(foreign)


def test_multi_scale_changes_vectors_and_fingerprint(tiny_encoder: Encoder) -> None:
    multi = build_encoder("tiny_random", "gap", max_side=64, device="cpu", scales=(1.0, 0.5))
    assert multi.fingerprint == tiny_encoder.fingerprint + "/scales1,0.5"
    pictures = [photo((96, 64), seed=4), photo((40, 70), seed=5)]
    single, both = tiny_encoder.embed(pictures), multi.embed(pictures)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(single, both, atol=1e-3)
    # The sum of the per-scale unit vectors, renormalised.
    half = build_encoder("tiny_random", "gap", max_side=64, device="cpu", scales=(0.5,)).embed(pictures)
    expected = single + half
    np.testing.assert_allclose(both, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    for bad in ((), (1.0, 1.0), (1.5,), (0.1,)):
        with pytest.raises(EncoderConfigError, match="scale"):
            build_encoder("tiny_random", "gap", max_side=64, device="cpu", scales=bad)


def test_region_of_the_whole_picture_is_close_to_the_picture(tiny_encoder: Encoder) -> None:
    picture = photo((64, 48), seed=7)
    whole = tiny_encoder.embed([picture])[0]
    region = tiny_encoder.embed_region(picture, (0, 0, 64, 48))
    assert float(whole @ region) > 0.99
    left = tiny_encoder.embed_region(picture, (0, 0, 24, 48))
    assert float(whole @ left) < float(whole @ region)
    np.testing.assert_allclose(np.linalg.norm(left), 1.0, rtol=1e-5)


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (10, 0, 5, 10), (-1, 0, 10, 10), (0, 0, 65, 10)])
def test_region_outside_the_picture_is_refused(tiny_encoder: Encoder, box: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="box"):
        tiny_encoder.embed_region(photo((64, 48)), box)  # type: ignore[arg-type]

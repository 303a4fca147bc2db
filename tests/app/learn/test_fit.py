"""`cbir fit`'s learning: k-means centroids and NetVLAD's alpha, PCA / whitening, and the written file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.config import Settings
from app.files.decoding import list_files
from app.learn.fit import FitOptions, fit_encoder, kmeans_centroids, learn_projection
from models import EncoderConfigError, build_encoder
from models.fitted import load_fitted
from tests.helpers.images import image_bytes


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_kmeans_finds_the_clusters_and_alpha_follows_the_ratio() -> None:
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(3, 16)))
    descriptors = unit(centres[np.arange(600) % 3] + 0.05 * rng.normal(size=(600, 16)))
    centroids, alpha = kmeans_centroids(descriptors, 3, assignment_ratio=10.0, seed=1)
    assert centroids.shape == (3, 16)
    # Every true centre has a centroid at cosine > 0.99.
    assert (unit(centroids) @ centres.T).max(axis=0).min() > 0.99
    dots = -np.sort(-(descriptors @ centroids.T), axis=1)
    assert alpha == pytest.approx(np.log(10.0) / np.mean(dots[:, 0] - dots[:, 1]), rel=1e-4)
    softer = kmeans_centroids(descriptors, 3, assignment_ratio=1.5, seed=1)[1]
    assert softer < alpha
    with pytest.raises(ValueError, match="at least as many descriptors"):
        kmeans_centroids(descriptors[:2], 3)
    with pytest.raises(ValueError, match="above 1"):
        kmeans_centroids(descriptors, 3, assignment_ratio=1.0)


def test_whitening_equalises_variances_and_pca_keeps_the_largest() -> None:
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(400, 12)) * np.linspace(5, 0.5, 12)).astype(np.float32)
    whiten = learn_projection(data, 6, eigen_power=-0.5)
    projected = whiten(torch.from_numpy(data)).numpy()
    stds = projected.std(axis=0)
    np.testing.assert_allclose(stds, stds.mean(), rtol=1e-3)
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-4)
    pca = learn_projection(data, 6, eigen_power=0.0)
    matrix = pca.matrix.numpy()
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(6), atol=1e-4)
    variances = pca(torch.from_numpy(data)).numpy().var(axis=0)
    assert (np.diff(variances) < 0).all()
    with pytest.raises(ValueError, match="more than 10 images"):
        learn_projection(data[:10], 10, eigen_power=-0.5)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for seed in range(12):
        (root / f"{seed}.jpg").write_bytes(image_bytes(seed))
    (root / "notes.txt").write_text("not an image")
    return root


def test_fit_writes_a_file_that_makes_a_fitted_encoder(settings: Settings, folder: Path) -> None:
    netvlad = settings.model_copy(update={"head": "netvlad", "scales": "1,0.5"})
    out = folder.parent / "fitted.safetensors"
    report = fit_encoder(
        netvlad, list_files(folder), out, FitOptions(clusters=3, projection_dim=8), source=str(folder)
    )
    assert report.images == 12
    assert len(report.skipped) == 1  # notes.txt
    assert report.clusters == 3 and report.alpha is not None and report.alpha > 0
    assert report.projection == "8-d, eigen-power -0.5"
    params = load_fitted(out)
    assert params.file_id == report.file_id
    assert params.fitted_on["images"] == 12
    assert params.scales == [1.0, 0.5]
    encoder = build_encoder(
        "tiny_random", "netvlad", max_side=64, device="cpu", scales=(1.0, 0.5), fitted=out
    )
    assert encoder.dim == 8
    assert encoder.fingerprint.endswith(f"/fit#{report.file_id}")


def test_fit_refuses_when_there_is_nothing_to_learn(settings: Settings, folder: Path) -> None:
    with pytest.raises(EncoderConfigError, match="nothing to fit"):
        fit_encoder(settings, list_files(folder), folder / "x.safetensors", FitOptions(), source="x")
    with pytest.raises(ValueError, match="more than 14 images"):
        fit_encoder(
            settings, list_files(folder), folder / "x.safetensors", FitOptions(projection_dim=14), source="x"
        )

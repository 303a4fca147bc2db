"""Local features and geometric verification: an edited copy has many inliers, another picture few."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from bench.copies import EDITS
from models.local_features import LocalFeatures, _ratio_matches, extract, extract_pair, inliers


def scene(seed: int) -> Image.Image:
    """A picture with corners at random places and angles (ORB needs them): random filled polygons."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (384, 256), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        centre = rng.uniform((0, 0), (384, 256))
        corners = [tuple(centre + rng.normal(0, 18, 2)) for _ in range(int(rng.integers(3, 6)))]
        draw.polygon(corners, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def jpeg(image: Image.Image, quality: int = 60) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def edited(image: Image.Image) -> Image.Image:
    cropped = image.crop((40, 20, 360, 240)).rotate(10, expand=True)
    return jpeg(cropped.filter(ImageFilter.GaussianBlur(0.8)).resize((240, 180)))


def test_an_edited_copy_has_many_inliers_and_another_picture_few() -> None:
    original = extract(scene(0))
    copy = extract(edited(scene(0)))
    other = extract(scene(1))
    assert len(original) > 100
    same, different = inliers(copy, original), inliers(copy, other)
    assert same >= 30
    assert different <= 8
    assert same > 4 * max(1, different)


def test_a_mirrored_copy_matches_through_the_mirrored_query() -> None:
    original = extract(scene(2))
    plain, mirrored = extract_pair(jpeg(ImageOps.mirror(scene(2))))
    assert inliers(mirrored, original) >= 30
    assert inliers(mirrored, original) > 3 * max(1, inliers(plain, original))


def test_flat_or_tiny_pictures_have_no_evidence() -> None:
    flat = extract(Image.new("RGB", (64, 64), (120, 30, 200)))
    assert len(flat) == 0
    assert inliers(flat, extract(scene(3))) == 0


@pytest.mark.parametrize("seed", [4, 5])
def test_features_survive_their_byte_form(seed: int) -> None:
    features = extract(scene(seed))
    back = LocalFeatures.from_bytes(features.to_bytes())
    np.testing.assert_array_equal(back.descriptors, features.descriptors)
    np.testing.assert_allclose(back.points, features.points, atol=0.25)
    assert len(features.to_bytes()) == 36 * len(features)


CORELS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "corel1k"


@pytest.mark.skipif(not CORELS.exists(), reason="Corel-1K is not in ../shared/datasets")
def test_a_real_photo_s_edited_copy_matches_it_and_not_its_category_neighbour() -> None:
    """Real Corel-1K photos: a cropped, rotated, recoloured copy against the original and another horse."""
    horses = sorted((CORELS / "horses").glob("*.jpg"))[:2]
    original, neighbour = (Image.open(path).convert("RGB") for path in horses)
    rng = np.random.default_rng(0)
    copy = EDITS["colour"](EDITS["rotate"](EDITS["crop"](original, rng), rng), rng)
    query = extract(jpeg(copy))
    assert inliers(query, extract(original)) >= 28  # "same" (app/search/verification.py MIN_INLIERS)
    assert inliers(query, extract(neighbour)) < 28


def _opencv_ratio_matches(query: LocalFeatures, candidate: LocalFeatures) -> list[tuple[int, int]]:
    """The ratio test through OpenCV's BFMatcher, the reference the faiss matcher must agree with."""
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, candidate.descriptors, k=2)
    kept = [p for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    return [(p[0].queryIdx, p[0].trainIdx) for p in kept]


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_the_ratio_test_keeps_the_matches_opencv_keeps(seed: int) -> None:
    """Copies, mirrored copies and unrelated pictures: the same (query, candidate) pairs survive."""
    original = scene(seed)
    queries = [extract(edited(original)), extract_pair(edited(original))[1], extract(scene(seed + 50))]
    candidate = extract(original)
    for query in queries:
        ours = _ratio_matches(query.descriptors, candidate.descriptors)
        found = list(zip(*(part.tolist() for part in ours), strict=True))
        assert found == _opencv_ratio_matches(query, candidate)

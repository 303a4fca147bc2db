"""Same picture or only similar: geometric verification of the first results, and the ranking it makes.

Re-ranking (app/search/reranking.py) pulls a query towards its neighbourhood, which is what "similar"
asks and the opposite of what "the same picture" asks: on Corel-1K it pushed the original of an edited copy
below its category's other photos for a third of the copies (issue 13). Global cosines cannot tell the two
apart either: they bunch between 0.9 and 0.99 after re-ranking. So the `candidates` results nearest to the
query by plain cosine are verified with local features (models/local_features.py: ORB, ratio test, RANSAC
similarity transform); the count of inliers becomes a calibrated probability that the result is the same
picture (a logistic curve, fitted on the tuned part of bench/quality.py's copies, no labels), and every
result's score is

    score = P(same) + (1 - P(same)) * cosine

where cosine is the score the ranking gave it (the re-ranked cosine, or the plain one for a verified result
the re-ranking left out) and P(same) is 0 for results that were not verified. The score is bounded like a
cosine, equals it wherever there is no evidence of a copy, and the results are *sorted* by it: a verified
copy comes first because its score is higher, not by a special case. A result is marked "same" when
P(same) >= 0.5, i.e. from MIN_INLIERS inliers on, or when its plain cosine is at least NEAR_IDENTICAL (a
re-saved copy of a picture too flat for keypoints).

Measured (bench/quality.py, default encoder, Corel-1K, held-out copies): see the README, "Choosing a
descriptor" and "Near-duplicates".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.search.reranking import NeighbourCache, RerankOptions, rank
from index import SearchParams, VectorIndex
from models.local_features import LocalFeatures, extract_pixels, grey_pixels, inliers

__all__ = [
    "MIN_INLIERS",
    "NEAR_IDENTICAL",
    "FeaturesOf",
    "QueryFeatures",
    "Ranked",
    "VerifyOptions",
    "probability",
    "rank_verified",
]

# P(same | inliers) = 1 / (1 + exp(-_SLOPE * (inliers - _MIDPOINT))): a logistic regression fitted by
# bench/quality.py (--tune) on the tuned copies of Corel-1K, positives a copy and its original, negatives
# the copy and every other verified candidate (no category labels). Its fit: slope 0.241, midpoint 27.75
# (sklearn, first run; the bench's own Newton fit on the final run's tuned pairs: 0.241, 28.91);
# on the tuned copies, "same" from 28 inliers has precision 0.985 at recall 0.853 (from 20: 0.956, 0.860).
_SLOPE = 0.241
_MIDPOINT = 27.75
MIN_INLIERS = 28  # the first count with P(same) >= 0.5: the "same" decision
_MIRROR_FROM = MIN_INLIERS  # below this many inliers on every candidate, the mirrored query is tried too

# The local features of stored images by id, in order (None: none to be had), all of one query's
# candidates in one call: the collection reads them in one SELECT (app/collection/features.py).
FeaturesOf = Callable[[Sequence[int]], Sequence[LocalFeatures | None]]


# Plain cosine from which a result is the same picture even without local evidence: a re-saved or resized
# copy of a picture too flat or too small for keypoints (ORB finds none on smooth thumbnails). Stricter than
# the old cosine-only near-duplicate threshold 0.9, at which bench/duplicates.py counted 9 pairs of distinct
# Corel-1K photos among 499,500.
NEAR_IDENTICAL = 0.98


def probability(count: int | np.ndarray, cosine: float | np.ndarray | None = None) -> np.ndarray:
    """P(same picture | RANSAC inliers), the logistic curve bench/quality.py fitted; 1 from NEAR_IDENTICAL
    on when the plain cosine is given."""
    p = 1.0 / (1.0 + np.exp(-_SLOPE * (np.asarray(count, np.float64) - _MIDPOINT)))
    if cosine is None:
        return p
    return np.where(np.asarray(cosine) >= NEAR_IDENTICAL, 1.0, p)


@dataclass(frozen=True)
class VerifyOptions:
    """How many of the plain-cosine first results are verified (0: verification off)."""

    candidates: int = 10

    @property
    def active(self) -> bool:
        return self.candidates > 0


class QueryFeatures:
    """A query's local features, extracted when first needed (the mirrored ones only if asked for)."""

    def __init__(
        self,
        image: Image.Image | None = None,
        plain: LocalFeatures | None = None,
        mirrored: LocalFeatures | None = None,
    ) -> None:
        if image is None and plain is None:
            raise ValueError("QueryFeatures needs the query's picture or its features")
        self._image, self._plain, self._mirrored = image, plain, mirrored
        self._pixels: np.ndarray | None = None  # grey, at the features' size: made once for both

    @property
    def plain(self) -> LocalFeatures:
        if self._plain is None:
            self._plain = extract_pixels(self._grey())
        return self._plain

    @property
    def mirrored(self) -> LocalFeatures:
        if self._mirrored is None:
            self._mirrored = extract_pixels(self._grey(), mirrored=True)
        return self._mirrored

    def _grey(self) -> np.ndarray:
        if self._pixels is None:
            assert self._image is not None
            self._pixels = grey_pixels(self._image)
        return self._pixels


@dataclass
class Ranked:
    """(Q, k) scores and ids as rank gives them, plus inliers (-1: not verified) and P(same)."""

    scores: np.ndarray
    ids: np.ndarray
    inliers: np.ndarray
    probabilities: np.ndarray

    @property
    def same(self) -> np.ndarray:
        return self.probabilities >= 0.5


def verify(query: QueryFeatures, candidates: Sequence[LocalFeatures | None]) -> np.ndarray:
    """Inliers of every candidate; the mirrored query is tried only when nothing matched as is."""
    counts = np.array([0 if c is None else inliers(query.plain, c) for c in candidates], np.int32)
    if len(counts) and counts.max() < _MIRROR_FROM:
        mirrored = np.array([0 if c is None else inliers(query.mirrored, c) for c in candidates], np.int32)
        counts = np.maximum(counts, mirrored)
    return counts


def rank_verified(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    options: RerankOptions,
    verification: VerifyOptions,
    query_features: Sequence[QueryFeatures | None],
    features_of: FeaturesOf,
    *,
    cache: NeighbourCache | None = None,
    exclude: Sequence[int | None] | None = None,
    params: SearchParams | None = None,
    allowed_ids: np.ndarray | None = None,
) -> Ranked:
    """rank(), then the plain first `verification.candidates` results verified and every score blended
    with P(same) (module docstring); sorted by that score. A query without features is not verified."""
    queries = np.asarray(queries, np.float32).reshape(-1, index.dim)
    scores, ids = rank(
        index, queries, k, options, cache=cache, exclude=exclude, params=params, allowed_ids=allowed_ids
    )
    counts = np.full(ids.shape, -1, np.int32)
    chances = np.zeros(ids.shape, np.float64)
    if not verification.active or not any(f is not None for f in query_features):
        return Ranked(scores, ids, counts, chances)
    plain_scores, plain_ids = rank(
        index,
        queries,
        verification.candidates,
        RerankOptions.off(),
        exclude=exclude,
        params=params,
        allowed_ids=allowed_ids,
    )
    out_scores = np.full_like(scores, -np.inf)
    out_ids = np.full_like(ids, -1)
    for row, features in enumerate(query_features):
        checked = plain_ids[row][plain_ids[row] >= 0]
        if features is None or not len(checked):
            out_scores[row], out_ids[row] = scores[row], ids[row]
            continue
        found = verify(features, features_of(checked.tolist()))
        chance = probability(found, plain_scores[row][: len(checked)])
        merged: dict[int, tuple[float, int, float]] = {
            int(i): (float(s), -1, 0.0) for s, i in zip(scores[row], ids[row], strict=True) if i >= 0
        }
        for image_id, plain, count, p in zip(
            checked.tolist(), plain_scores[row], found, chance, strict=False
        ):
            ranked_score = merged.get(image_id, (float(plain), -1, 0.0))[0]
            merged[image_id] = (ranked_score, int(count), float(p))
        blended = [(_blend(score, p), image_id, count, p) for image_id, (score, count, p) in merged.items()]
        blended.sort(key=lambda item: -item[0])  # a stable sort: ties keep the ranking's order
        width = min(k, len(blended))
        out_scores[row, :width] = [b[0] for b in blended[:width]]
        out_ids[row, :width] = [b[1] for b in blended[:width]]
        counts[row, :width] = [b[2] for b in blended[:width]]
        chances[row, :width] = [b[3] for b in blended[:width]]
    return Ranked(out_scores, out_ids, counts, chances)


def _blend(score: float, p: float) -> float:
    if not math.isfinite(score):
        return score
    return p + (1.0 - p) * score

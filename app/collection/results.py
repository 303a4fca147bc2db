"""What the collection hands back: a search hit, an image added (or found already there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.db.tables import Image
from app.search.verification import Ranked

__all__ = ["Added", "Hit", "hits_of"]


@dataclass(frozen=True)
class Hit:
    image: Image
    score: float
    # Geometric verification (app/search/verification.py): RANSAC inliers (None: not verified) and the
    # calibrated probability that the hit is the same picture as the query (0 when not verified).
    inliers: int | None = None
    p_same: float = 0.0

    @property
    def match(self) -> Literal["same", "similar"]:
        """ "same" (an edited copy or near-duplicate of the query) or "similar"."""
        return "same" if self.p_same >= 0.5 else "similar"


@dataclass(frozen=True)
class Added:
    image: Image
    duplicate: bool


def hits_of(ranked: Ranked, rows: dict[int, Image]) -> list[list[Hit]]:
    """Per query, its ranked ids as hits on their rows; an id the database no longer has is dropped."""
    return [
        [
            Hit(rows[int(i)], float(s), None if n < 0 else int(n), float(p))
            for s, i, n, p in zip(srow, irow, nrow, prow, strict=True)
            if int(i) in rows
        ]
        for srow, irow, nrow, prow in zip(
            ranked.scores, ranked.ids, ranked.inliers, ranked.probabilities, strict=True
        )
    ]

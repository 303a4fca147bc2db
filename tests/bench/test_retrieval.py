"""Query-against-database figures on rankings small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.retrieval import l2_normalise, query_figures


def test_figures_match_a_hand_computed_ranking() -> None:
    # One query along x; the database at decreasing cosine: relevant, other, relevant, other.
    database = l2_normalise(np.array([[1.0, 0.1], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]))
    query = l2_normalise(np.array([[1.0, 0.0]]))
    figures = query_figures(query, np.array([0]), database, np.array([0, 1, 0, 1]), k=2)
    assert figures.mean_ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert figures.precision == pytest.approx(0.5)
    perfect = query_figures(query, np.array([0]), database, np.array([0, 0, 1, 1]), k=2)
    assert perfect.mean_ap == pytest.approx(1.0) and perfect.precision == pytest.approx(1.0)


def test_dimension_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="dim 3 but the database has 2"):
        query_figures(
            np.zeros((1, 3), np.float32), np.array([0]), np.zeros((2, 2), np.float32), np.zeros(2), k=1
        )

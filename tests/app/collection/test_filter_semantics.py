"""What each filter operator selects, at its boundaries, on rows built to tell the wrong answers apart.

The API tests (tests/app/test_catalog.py) show the language end to end; these pin its semantics one
operator at a time, so a swapped comparison, an `$in` that reads one value, an `or` where every condition
must hold, or a path prefix whose `_` and `%` act as wildcards selects other images than these and fails.
They compile the filter with ``where`` and run it on the database itself, on every database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from app.collection.filters import where
from app.db.tables import Base, Image
from tests.helpers.databases import DATABASES, fresh_database

# name -> (metadata, format, width, created_at): each filter below matches a set no wrong reading matches.
ROWS: dict[str, tuple[dict[str, Any], str, int, datetime]] = {
    "a/1.jpg": (
        {"kind": "dog", "n": 1, "price": 10, "flag": True, "day": "2026-01-15", "format": "tiff"},
        "JPEG",
        64,
        datetime(2026, 1, 1, tzinfo=UTC),
    ),
    "a/2.jpg": (
        {"kind": "cat", "n": 2, "price": 12.5, "flag": False, "day": "2026-03-01"},
        "JPEG",
        128,
        datetime(2026, 2, 1, tzinfo=UTC),
    ),
    "a_b/3.png": (
        {"kind": "bird", "n": 3, "price": "n/a", "note": "x"},
        "PNG",
        256,
        datetime(2026, 3, 1, tzinfo=UTC),
    ),
    "b/a/4.jpg": (
        {"kind": "dog", "n": 4, "price": 20, "code": "3"},
        "JPEG",
        512,
        datetime(2026, 4, 1, tzinfo=UTC),
    ),
    "a%/5.png": ({"kind": "fish", "n": 5, "price": 15}, "PNG", 1024, datetime(2026, 5, 1, tzinfo=UTC)),
}


@pytest.fixture(scope="module", params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with fresh_database(request.param) as url:
        made = create_engine(url or f"sqlite:///{tmp_path_factory.mktemp('filters') / 'filters.db'}")
        Base.metadata.create_all(made)
        with Session(made) as session, session.begin():
            for number, (name, (meta, fmt, width, created)) in enumerate(ROWS.items()):
                session.add(
                    Image(
                        sha256=f"{number:064d}",
                        original_name=name,
                        width=width,
                        height=width // 2,
                        size_bytes=1000 * (number + 1),
                        format=fmt,
                        created_at=created,
                        meta=meta,
                        encoder="test",
                        vector=b"",
                    )
                )
        yield made
        made.dispose()


def matching(engine: Engine, spec: dict[str, Any] | None, prefix: str | None = None) -> list[str]:
    with Session(engine) as session:
        condition = where(spec, prefix, engine.dialect.name)
        return sorted(session.scalars(select(Image.original_name).where(condition)))


def named(*numbers: int) -> list[str]:
    return sorted(name for name in ROWS if int(name.rsplit("/", 1)[1].split(".")[0]) in numbers)


@pytest.mark.parametrize(
    ("op", "expected"),
    [("$gt", (3, 4, 5)), ("$gte", (2, 3, 4, 5)), ("$lt", (1,)), ("$lte", (1, 2))],
)
def test_each_range_operator_at_its_boundary(engine: Engine, op: str, expected: tuple[int, ...]) -> None:
    assert matching(engine, {"n": {op: 2}}) == named(*expected)


@pytest.mark.parametrize(
    ("op", "expected"),
    [("$gt", (2,)), ("$gte", (1, 2)), ("$lt", ()), ("$lte", (1,))],
)
def test_range_operators_on_date_strings(engine: Engine, op: str, expected: tuple[int, ...]) -> None:
    assert matching(engine, {"day": {op: "2026-01-15"}}) == named(*expected)


@pytest.mark.parametrize(
    ("op", "expected"),
    [("$gt", (3, 4, 5)), ("$gte", (2, 3, 4, 5)), ("$lt", (1,)), ("$lte", (1, 2))],
)
def test_range_operators_on_the_image_columns(engine: Engine, op: str, expected: tuple[int, ...]) -> None:
    assert matching(engine, {"width": {op: 128}}) == named(*expected)
    assert matching(engine, {"created_at": {op: "2026-02-01"}}) == named(*expected)


def test_every_condition_must_hold(engine: Engine) -> None:
    assert matching(engine, {"kind": "dog", "n": {"$gte": 2}}) == named(4)
    assert matching(engine, {"n": {"$gte": 2, "$lt": 4}}) == named(2, 3)
    assert matching(engine, {"kind": "dog", "format": "PNG"}) == []


def test_in_matches_any_of_its_values(engine: Engine) -> None:
    assert matching(engine, {"kind": {"$in": ["cat", "dog"]}}) == named(1, 2, 4)
    assert matching(engine, {"n": {"$in": [5, 1]}}) == named(1, 5)


def test_comparisons_are_typed(engine: Engine) -> None:
    # A number matches numbers only (12.5 among them), never the text "n/a"; a string strings only.
    assert matching(engine, {"price": {"$gte": 10}}) == named(1, 2, 4, 5)
    assert matching(engine, {"price": {"$gt": 11, "$lt": 13}}) == named(2)
    assert matching(engine, {"price": 12.5}) == named(2)
    assert matching(engine, {"n": {"$lt": "9"}}) == []
    assert matching(engine, {"price": {"$lt": "zzz"}}) == named(3)
    assert matching(engine, {"code": "3"}) == named(4)
    assert matching(engine, {"n": "3"}) == []
    assert matching(engine, {"code": 3}) == []


def test_booleans_match_their_own_value_only(engine: Engine) -> None:
    assert matching(engine, {"flag": True}) == named(1)
    assert matching(engine, {"flag": False}) == named(2)
    assert matching(engine, {"n": True}) == []


def test_exists(engine: Engine) -> None:
    assert matching(engine, {"note": {"$exists": True}}) == named(3)
    assert matching(engine, {"note": {"$exists": False}}) == named(1, 2, 4, 5)
    assert matching(engine, {"width": {"$exists": True}}) == named(1, 2, 3, 4, 5)


def test_columns_and_the_metadata_key_of_the_same_name(engine: Engine) -> None:
    assert matching(engine, {"format": "png"}) == named(3, 5)  # the column, any case
    assert matching(engine, {"metadata.format": "tiff"}) == named(1)  # the metadata key
    assert matching(engine, {"metadata.kind": "dog"}) == named(1, 4)


def test_a_path_prefix_is_a_literal_prefix(engine: Engine) -> None:
    assert matching(engine, None, "a/") == named(1, 2)  # not b/a/4.jpg
    assert matching(engine, None, "a_") == named(3)  # `_` is not a wildcard
    assert matching(engine, None, "a%") == named(5)  # nor `%`
    assert matching(engine, {"kind": "dog"}, "a/") == named(1)
    assert matching(engine, None, None) == named(1, 2, 3, 4, 5)

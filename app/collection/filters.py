"""Filters over the collection's rows: a small JSON language compiled to SQL for SQLite and PostgreSQL.

``{"sku": "A-17", "price": {"$gte": 10, "$lt": 20}, "tag": {"$in": ["red", "blue"]}, "note": {"$exists":
false}, "created_at": {"$gte": "2026-01-01"}, "format": "PNG", "width": {"$gte": 800}}``: every condition
must hold. A key is a metadata key, except ``created_at``, ``format``, ``width``, ``height`` and
``size_bytes``, which are the image's own columns (``metadata.format`` names a metadata key called format).

Why compiled to SQL rather than tested in Python: a search computes the ids that match (``allowed_ids``) and
the vector search keeps to them, so the filter must run over the whole collection in one query, with the
database's JSON functions, not over rows loaded one by one. Comparisons are typed: a number matches numbers
only and a string strings only (ISO-8601 dates compare as strings, which orders them when they are written
alike), so ``{"price": {"$gte": 10}}`` never trips over a row whose price is the text "n/a" — on PostgreSQL
the cast is guarded by a CASE, which (unlike AND) fixes the order of evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, false, func, literal, or_, true
from sqlalchemy.sql.elements import ColumnElement as Element

from app.db.tables import Image
from app.errors import InvalidRequestError

OPERATORS = ("$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$exists")
RANGES = {"$gt": "__gt__", "$gte": "__ge__", "$lt": "__lt__", "$lte": "__le__"}
MAX_IN = 1000
Scalar = str | int | float | bool

Clause = ColumnElement[bool]


def parse_filter(raw: str | dict[str, Any] | None, what: str = "filter") -> dict[str, Any] | None:
    """A filter from a JSON string (query string, form field) or an object (JSON body); None: no filter."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"{what} is not valid JSON ({exc.msg} at character {exc.pos}): send an object such as "
                '{"sku": "A-17", "price": {"$gte": 10}}'
            ) from exc
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"{what} must be a JSON object, got {type(raw).__name__}")
    return raw


def where(spec: dict[str, Any] | None, path_prefix: str | None, dialect: str) -> Clause:
    """The SQL condition for a filter and a path prefix (both optional) on the given dialect."""
    clauses: list[Clause] = []
    for key, condition in (spec or {}).items():
        if not isinstance(key, str) or not key:
            raise InvalidRequestError("filter keys must be non-empty strings")
        clauses.append(_condition(key, condition, dialect))
    if path_prefix:
        clauses.append(path_prefix_clause(path_prefix))
    return and_(true(), *clauses)


def path_prefix_clause(prefix: str) -> Clause:
    """Images whose path (as indexed) starts with ``prefix``; LIKE's wildcards in it are taken literally."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Image.original_name.like(f"{escaped}%", escape="\\")


def _condition(key: str, condition: object, dialect: str) -> Clause:
    field = _column_field(key) if key in COLUMNS else _MetaField(key.removeprefix("metadata."), dialect)
    if not isinstance(condition, dict):
        return field.equals(_scalar(key, "equality", condition))
    if not condition:
        raise InvalidRequestError(f"filter on {key!r}: an empty object; use one of {', '.join(OPERATORS)}")
    parts: list[Clause] = []
    for op, value in condition.items():
        if op == "$eq":
            parts.append(field.equals(_scalar(key, op, value)))
        elif op == "$in":
            if not isinstance(value, list) or not value or len(value) > MAX_IN:
                raise InvalidRequestError(f"filter on {key!r}: $in takes a list of 1 to {MAX_IN} values")
            parts.append(or_(*(field.equals(_scalar(key, op, item)) for item in value)))
        elif op in RANGES:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidRequestError(
                    f"filter on {key!r}: {op} compares with a number or an ISO-8601 date string, got "
                    f"{json.dumps(value)}"
                )
            parts.append(field.compare(op, value))
        elif op == "$exists":
            if not isinstance(value, bool):
                raise InvalidRequestError(f"filter on {key!r}: $exists takes true or false")
            parts.append(field.exists(value))
        else:
            raise InvalidRequestError(
                f"filter on {key!r}: unknown operator {op!r}; the operators are {', '.join(OPERATORS)}"
            )
    return and_(*parts)


def _scalar(key: str, op: str, value: object) -> Scalar:
    if isinstance(value, str | int | float | bool):
        return value
    raise InvalidRequestError(
        f"filter on {key!r}: {op} takes a string, number or boolean, got {json.dumps(value)} "
        '(use {"$exists": false} for a missing key)'
    )


class _MetaField:
    """One metadata key, typed by the JSON functions of the dialect."""

    def __init__(self, key: str, dialect: str) -> None:
        if not key:
            raise InvalidRequestError("filter: 'metadata.' must be followed by a key")
        self.key = key
        self.pg = dialect == "postgresql"
        self.type: Any
        self.text: Any
        if self.pg:
            node = Image.meta.op("->")(literal(key))
            self.type = func.json_typeof(node)
            self.text = Image.meta.op("->>")(literal(key))
        else:
            path = '$."' + key.replace('"', '\\"') + '"'
            self.type = func.json_type(Image.meta, path)
            self.text = func.json_extract(Image.meta, path)

    def _is(self, kind: str) -> Clause:
        if self.pg:
            return self.type == {"text": "string", "real": "number"}.get(kind, kind)
        return self.type.in_(("integer", "real")) if kind == "real" else self.type == kind

    def _number(self) -> Element[Any]:
        if self.pg:  # CASE: the cast must never run on a value that is not a number
            return case((self.type == "number", cast(self.text, Float)), else_=None)
        return case((self.type.in_(("integer", "real")), self.text), else_=None)

    def equals(self, value: Scalar) -> Clause:
        if isinstance(value, bool):
            if self.pg:
                return and_(self.type == "boolean", self.text == ("true" if value else "false"))
            return self.type == ("true" if value else "false")
        if isinstance(value, int | float):
            return self._number() == value
        return and_(self._is("text"), self.text == value)

    def compare(self, op: str, value: int | float | str) -> Clause:
        if isinstance(value, str):
            return and_(self._is("text"), getattr(self.text, RANGES[op])(value))
        return getattr(self._number(), RANGES[op])(value)

    def exists(self, wanted: bool) -> Clause:
        return self.type.is_not(None) if wanted else self.type.is_(None)


class _ColumnField:
    def __init__(self, key: str, convert: Callable[[str, str, object], Any]) -> None:
        self.key = key
        self.column: Any = getattr(Image, key)
        self.convert = convert

    def equals(self, value: Scalar) -> Clause:
        return self.column == self.convert(self.key, "equality", value)

    def compare(self, op: str, value: int | float | str) -> Clause:
        return getattr(self.column, RANGES[op])(self.convert(self.key, op, value))

    def exists(self, wanted: bool) -> Clause:
        return true() if wanted else false()


def _to_datetime(key: str, op: str, value: object) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value)) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidRequestError(
            f"filter on {key!r}: {op} takes an ISO-8601 date or time such as 2026-01-31 or "
            f"2026-01-31T12:00:00Z, got {json.dumps(value)}"
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _to_int(key: str, op: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"filter on {key!r}: {op} takes a number, got {json.dumps(value)}")
    return value


def _to_format(key: str, op: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"filter on {key!r}: {op} takes a format name such as JPEG or PNG")
    return value.upper()


COLUMNS: dict[str, Callable[[str, str, object], Any]] = {
    "created_at": _to_datetime,
    "format": _to_format,
    "width": _to_int,
    "height": _to_int,
    "size_bytes": _to_int,
}


def _column_field(key: str) -> _ColumnField:
    return _ColumnField(key, COLUMNS[key])

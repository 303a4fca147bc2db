"""Refusing what a route does not know: a mistyped parameter must be an error, not silently ignored.

(`?k=2` on POST /search used to return 10 results, and a filter sent under a wrong name returned unfiltered
results: a 422 that names the parameter is the only answer a client can act on.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import Request

from app.errors import InvalidRequestError


def unknown_query(request: Request, known: Iterable[str]) -> None:
    extra = sorted(set(request.query_params) - set(known))
    if extra:
        allowed = ", ".join(sorted(known)) or "none (send the parameters in the body)"
        raise InvalidRequestError(
            f"unknown query parameter{'s' if len(extra) > 1 else ''} {', '.join(extra)}; this route takes: "
            f"{allowed}"
        )


def query_params(*known: str) -> Callable[[Request], None]:
    """A dependency refusing query parameters other than ``known``."""

    def check(request: Request) -> None:
        unknown_query(request, known)

    return check

"""The two kinds of error: the API's (status and code, all in app/errors.py) and the jobs' (exit status)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

import pytest

import app
from app.cli.exits import exit_code
from app.errors import ApiError, JobError

E = TypeVar("E", bound=Exception)


def every_subclass(base: type[E]) -> list[type[E]]:
    """``base``'s subclasses once every module of app/ is imported (wherever one might define another)."""
    for module in pkgutil.walk_packages(app.__path__, "app."):
        if module.name != "app.cli.__main__":  # running it runs the command
            importlib.import_module(module.name)
    found: list[type[E]] = []
    todo = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


API_ERRORS = every_subclass(ApiError)
JOB_ERRORS = every_subclass(JobError)


@pytest.mark.parametrize("error", API_ERRORS, ids=lambda cls: cls.__name__)
def test_every_api_error_is_listed_in_one_module(error: type[ApiError]) -> None:
    assert error.__module__ == "app.errors", f"{error.__name__}: define API errors in app/errors.py"
    assert 400 <= error.status_code < 600 and error.error


def test_an_error_code_means_one_status() -> None:
    statuses: dict[str, set[int]] = {}
    errors: list[type[ApiError]] = [ApiError, *API_ERRORS]
    for error in errors:
        statuses.setdefault(error.error, set()).add(error.status_code)
    assert {code: found for code, found in statuses.items() if len(found) > 1} == {}


@pytest.mark.parametrize("error", JOB_ERRORS, ids=lambda cls: cls.__name__)
def test_job_errors_carry_an_exit_status_and_no_http_status(error: type[JobError]) -> None:
    assert not issubclass(error, ApiError)
    assert not hasattr(error, "status_code") and not hasattr(error, "error")
    assert exit_code(error("what to do")) == error.exit_code != 0


def test_the_cli_exits_one_for_a_refusal_and_two_for_bad_input() -> None:
    assert exit_code(ApiError("refused")) == 1
    assert exit_code(JobError("cannot go on")) == 1
    assert exit_code(ValueError("bad value")) == 2
    assert exit_code(FileNotFoundError("gone")) == 2
    assert exit_code(RuntimeError("a bug")) is None

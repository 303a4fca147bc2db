"""Test databases: SQLite by default, and a fresh database on the PostgreSQL server of CBIR_TEST_POSTGRES_URL.

.ci/run starts that server and fails when it cannot (.ci/postgres.sh), so in CI no PostgreSQL variant is
skipped (CBIR_REQUIRE_POSTGRES turns a would-be skip into a failure); on a developer's machine without
one the variants skip, saying how to run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url

POSTGRES_URL = os.environ.get("CBIR_TEST_POSTGRES_URL")
REQUIRED = bool(os.environ.get("CBIR_REQUIRE_POSTGRES"))  # .ci/run: a skipped variant is a failure
DATABASES = ["sqlite", "postgresql"]


@contextmanager
def fresh_database(kind: str) -> Iterator[str | None]:
    """None for SQLite (the collection's own file), or the URL of a new, empty PostgreSQL database that is
    dropped afterwards (with FORCE: a killed server process may still hold a connection)."""
    if kind == "sqlite":
        yield None
        return
    if not POSTGRES_URL:
        if REQUIRED:
            pytest.fail(
                "CBIR_REQUIRE_POSTGRES is set but CBIR_TEST_POSTGRES_URL is not: no PostgreSQL server"
            )
        pytest.skip("no PostgreSQL server: set CBIR_TEST_POSTGRES_URL (.ci/run installs and starts one)")
    name = f"cbir_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

"""The real services the tests use, and what happens when one is missing.

PostgreSQL is the server on 127.0.0.1:5432 (user postgres, database `test`). When a service is
unreachable its tests skip with the reason, except in CI (CI=true), where they fail: a green CI
must mean everything ran.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("CRM_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_pg_problem: list[str] = []


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can (asked once per run)."""
    if not _pg_problem:
        try:
            engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as connection:
                connection.execute(sa.text("select 1"))
            engine.dispose()
            _pg_problem.append("")
        except Exception as exc:  # any failure to reach the server is the reason we report
            _pg_problem.append(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc.__class__.__name__}: {exc}")
    return _pg_problem[0] or None


def missing(problem: str | None, what: str) -> None:
    """Skip (on a user's machine) or fail (in CI) when `problem` says a service is missing."""
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem} — CI=true, so {what} must run, not skip")
    pytest.skip(problem)


def require_postgres() -> None:
    missing(postgres_problem(), "PostgreSQL tests")

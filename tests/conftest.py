"""Shared fixtures: every storage test runs on a SQLite file and on PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (user postgres, database `test`); each test gets
its own schema, dropped afterwards. When it is unreachable the PostgreSQL variants skip
with the reason, except in CI (CI=true), where they fail: a green CI must mean both ran.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.metamodel import Metamodel, load_blueprint
from engine.rules import FUNCTION_NAMES, FakeClock

PG_ADMIN_URL = os.environ.get("CRM_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_pg_problem: list[str] = []


def _postgres_problem() -> str | None:
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


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem} — CI=true, so PostgreSQL tests must run, not skip")
    pytest.skip(problem)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of this test's own."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def write_blueprint(folder: Path, files: dict[str, str]) -> Path:
    """Write inline YAML files (dedented) into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def load(folder: Path) -> Metamodel:
    return load_blueprint(folder, functions=FUNCTION_NAMES)


@pytest.fixture
def make_engine(db_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Build a runtime from inline blueprint files (or a blueprint path) on this test's database."""
    opened: list[Engine] = []

    def make(files: dict[str, str] | Path, *, folder: str = "bp", **options: object) -> Engine:
        path = files if isinstance(files, Path) else write_blueprint(tmp_path / folder, files)
        runtime = open_engine(load(path), db_url, clock=clock, **options)  # type: ignore[arg-type]
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        runtime.close()


SHIPPED_CRM = Path(__file__).resolve().parent.parent / "blueprints" / "crm"
SHIPPED_SERVICE = Path(__file__).resolve().parent.parent / "blueprints" / "service"

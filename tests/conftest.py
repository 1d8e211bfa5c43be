"""Shared fixtures: every storage test runs on a SQLite file and on PostgreSQL.

Helpers shared by several test modules live in tests/support; test modules never import each other.

PostgreSQL is the server on 127.0.0.1:5432 (user postgres, database `test`); each test gets
its own schema, dropped afterwards. When it is unreachable the PostgreSQL variants skip
with the reason, except in CI (CI=true), where they fail: a green CI must mean both ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.rules import FakeClock
from tests.support.blueprints import load, write_blueprint
from tests.support.passwords import CHEAP_HASHER
from tests.support.services import PG_ADMIN_URL, require_postgres


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


@pytest.fixture
def make_engine(db_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Build a runtime from inline blueprint files (or a blueprint path) on this test's database."""
    opened: list[Engine] = []

    def make(files: dict[str, str] | Path, *, folder: str = "bp", **options: object) -> Engine:
        path = files if isinstance(files, Path) else write_blueprint(tmp_path / folder, files)
        options.setdefault("password_hasher", CHEAP_HASHER)
        runtime = open_engine(load(path), db_url, clock=clock, **options)  # type: ignore[arg-type]
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        runtime.close()


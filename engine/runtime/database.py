"""Database connections: SQLite (WAL, one writer at a time) or PostgreSQL.

`Database.write()` is the only way to open a write transaction. On SQLite it takes a
process-wide lock and starts with BEGIN IMMEDIATE, so concurrent writers queue instead of
failing with "database is locked"; on PostgreSQL it is a plain transaction and row locks,
`version` checks and advisory locks keep concurrent writers correct.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def normalize_url(url: str) -> str:
    """Accept the URLs people type (postgresql://, postgres://) and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        options: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps}
        if self.is_sqlite:
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
            options["poolclass"] = sa.pool.QueuePool
            options["pool_size"] = 8
            options["max_overflow"] = 8
        else:
            options["pool_size"] = 10
            options["max_overflow"] = 10
            options["pool_pre_ping"] = True
        self.engine = sa.create_engine(self.url, **options)
        self._write_lock = threading.RLock()
        if self.is_sqlite:
            self._configure_sqlite()

    def _configure_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           "busy_timeout=30000", "cache_size=-65536", "temp_store=MEMORY"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            immediate = connection.get_execution_options().get("crm_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self.is_sqlite:
            with self._write_lock:
                with self.engine.connect().execution_options(crm_write=True) as connection:
                    with connection.begin():
                        yield connection
        else:
            with self.engine.begin() as connection:
                yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only transaction (a consistent snapshot on both databases)."""
        with self.engine.connect() as connection:
            with connection.begin():
                yield connection

    def dispose(self) -> None:
        self.engine.dispose()

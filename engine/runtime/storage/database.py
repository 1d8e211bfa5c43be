"""Database connections: SQLite (WAL, one writer at a time) or PostgreSQL.

`Database.write()` is the only way to open a write transaction. On SQLite it takes a
process-wide lock and starts with BEGIN IMMEDIATE, so concurrent writers queue instead of
failing with "database is locked"; on PostgreSQL it is a plain transaction and row locks,
`version` checks and advisory locks keep concurrent writers correct.

`Database.run(function, write=...)` is how the web app runs database work off its event
loop. Reads go to Starlette's thread pool. On SQLite a write is first tried on the event
loop itself, without waiting: if no other thread or process is writing at that moment
(the usual case: a single-record write takes a millisecond or two), it runs right there;
otherwise it queues on one dedicated writer thread. Handing short SQLite writes to pool
threads costs more than the write: every statement releases the interpreter lock and the
threads ping-pong for it (bench/RESULTS.md: about 40 % of a create's CPU time). A write
that would wait never blocks the loop: the attempt gives up before its first statement.

Group commit (SQLite): the writes that run on the event loop during one turn of the loop —
the requests that arrived together — share one transaction, each in a savepoint of its own,
and one COMMIT at the start of the next turn; every request waits for that commit before it
answers, so a response still means "stored". A request that fails rolls back to its own
savepoint and leaves the others alone; a failed COMMIT fails every request of the group
(none of their writes is kept). While a group is open, reads and writes on the loop's
thread see and join it, so requests still behave as if they ran one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from starlette.concurrency import run_in_threadpool

from engine.runtime.storage import jsontext
from engine.runtime.storage.prepared import Prepared, discard_deferred, flush_deferred

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000
# SQLite's page cache, per connection: the one write connection keeps the indexes it updates on
# every create; each reader gets a small one (the OS page cache holds the file for all of them).
# At 64 MiB each, 8 readers on a 1M-lead file grew the server to 700 MB.
WRITER_CACHE_KIB, READER_CACHE_KIB = 65_536, 8_192


class WriteBusy(Exception):
    """Someone else is writing right now; raised only by a no-wait attempt, before any work."""


@dataclass(eq=False)
class _Group:
    """Writes of one turn of the event loop, committed together (see the module's docstring)."""

    connection: sa.Connection
    transaction: sa.RootTransaction
    thread: int
    done: asyncio.Future[None]


_savepoint_names = itertools.count()


@contextlib.contextmanager
def savepoint(connection: sa.Connection) -> Iterator[sa.Connection]:
    """A savepoint around the block: released when it ends, rolled back to if it raises.
    Issued on the driver's cursor: SQLAlchemy's begin_nested() costs as much as an INSERT.
    Writes held back on the connection (prepared.deferring) are sent first, and those held
    back inside the block are dropped with it when it rolls back."""
    flush_deferred(connection)
    # (SQLAlchemy types dbapi_connection as optional: None only once the pool invalidated it)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    name = f"crm_sp{next(_savepoint_names)}"
    cursor.execute(f"SAVEPOINT {name}")
    try:
        yield connection
    except BaseException:
        discard_deferred(connection)
        cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
        cursor.execute(f"RELEASE SAVEPOINT {name}")
        raise
    else:
        cursor.execute(f"RELEASE SAVEPOINT {name}")
    finally:
        cursor.close()


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
        options: dict[str, Any] = {"echo": echo, "json_serializer": jsontext.dumps,
                                   "json_deserializer": jsontext.loads}
        if self.is_sqlite:
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
            options["poolclass"] = sa.pool.QueuePool
            options["pool_size"] = 8
            options["max_overflow"] = 4
        else:
            options["pool_size"] = 10
            options["max_overflow"] = 10
            options["pool_pre_ping"] = True
        self.engine = sa.create_engine(self.url, **options)
        self._write_lock = threading.RLock()
        self._writer: ThreadPoolExecutor | None = None
        self._attempt = threading.local()  # .nowait: the next write() must not wait for the lock;
        # .loop: a write may open a group on this loop; .group: the group this attempt wrote in
        self._group: _Group | None = None  # SQLite: the open group commit, if any
        # SQLite: one connection kept for all writes (they are serial anyway): checking a pooled
        # connection out and back in for every write cost more than the write's own statements.
        self._write_connection: sa.Connection | None = None
        self._lookups = threading.local()  # SQLite: .connection, this thread's own for `lookup`
        self._lookup_connections: list[Any] = []
        if self.is_sqlite:
            self._configure_sqlite()

    def _configure_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           f"busy_timeout={BUSY_TIMEOUT_MS}", f"cache_size=-{READER_CACHE_KIB}", "temp_store=MEMORY"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            options = connection.get_execution_options()
            if not options.get("crm_write", False):
                connection.exec_driver_sql("BEGIN")
            else:  # on the driver's cursor: through exec_driver_sql this cost as much as an INSERT
                # (typed optional by SQLAlchemy: None only once the pool invalidated the connection)
                cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    if not options.get("crm_nowait", False):
                        cursor.execute("BEGIN IMMEDIATE")
                        return
                    cursor.execute("PRAGMA busy_timeout=0")  # another process may hold the lock: ask once
                    try:
                        cursor.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as error:
                        if "locked" in str(error) or "busy" in str(error):
                            raise WriteBusy() from None
                        raise
                    finally:
                        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                finally:
                    cursor.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self.is_sqlite:
            attempt = self._attempt
            nowait = getattr(attempt, "nowait", False)
            attempt.nowait = False  # only the first write of a no-wait attempt may give up
            group = self._group
            if group is not None and group.thread == threading.get_ident():  # this loop's open group: join it
                if getattr(attempt, "loop", None) is not None:
                    attempt.group = group
                with savepoint(group.connection):
                    yield group.connection
                return
            if not self._write_lock.acquire(blocking=not nowait):
                raise WriteBusy()
            try:
                connection = self._write_connection
                if connection is None or connection.invalidated:
                    connection = self._write_connection = self.engine.connect()
                    driver = connection.connection.dbapi_connection  # (not exec_driver_sql: it would begin)
                    assert driver is not None
                    driver.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
                elif connection.in_transaction():  # a write inside a write on this thread: as before, its own
                    connection = self.engine.connect()
                options = connection.get_execution_options()
                if options.get("crm_write") is not True or options.get("crm_nowait") is not nowait:
                    connection.execution_options(crm_write=True, crm_nowait=nowait)  # costs as much as a look-up
                loop = getattr(attempt, "loop", None)
                if loop is not None and connection is self._write_connection:
                    group = self._open_group(connection, loop)
                    attempt.group = group
                    with savepoint(connection):
                        yield connection
                    return
                try:
                    with connection.begin():
                        yield connection
                finally:
                    if connection is not self._write_connection:
                        connection.close()
            finally:
                self._write_lock.release()
        else:
            with self.engine.begin() as connection:
                yield connection

    def _open_group(self, connection: sa.Connection, loop: asyncio.AbstractEventLoop) -> _Group:
        """Begin the transaction a turn of `loop` writes in (the caller holds the write lock; the
        group takes a hold of its own, which its commit gives back), committed next turn."""
        group = _Group(connection, connection.begin(), threading.get_ident(), loop.create_future())
        self._write_lock.acquire()
        self._group = group
        loop.call_soon(self._commit_group, group)
        return group

    def _commit_group(self, group: _Group) -> None:
        try:
            group.transaction.commit()
        except BaseException as error:  # a deferred constraint, a full disk: no write of the group is kept
            group.connection.invalidate()  # closing the driver's connection rolls back; the next write reconnects
            group.done.set_exception(error)
        else:
            group.done.set_result(None)
        finally:
            self._group = None
            self._write_lock.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only transaction (a consistent snapshot on both databases). On the thread of
        an open group commit, the group's own connection (it sees the writes not yet committed)."""
        group = self._group
        if group is not None and group.thread == threading.get_ident():
            yield group.connection
            return
        with self.engine.connect() as connection:
            with connection.begin():
                yield connection

    def analyze(self, tables: Iterable[sa.Table]) -> list[str]:
        """Refresh the planner's statistics of each of `tables` that has none or has since halved
        or doubled in rows; returns what was analyzed ("lead: 600 → 1,000,000 rows"). Called after
        the engine's bulk work (an import, the demo data) and hourly by the worker.

        Both databases plan lists from these statistics. Without them PostgreSQL (autovacuum off
        or behind) keeps planning a filled table as empty — a 1M-row list ran at 0.27× until
        ANALYZE — and SQLite guesses that `status = 'new'` is selective and sorts a third of a
        million rows by `updated_at` (620 ms) where, knowing better, it walks the date index
        (0.7 ms). Statistics are refreshed when the row count moves 2× because stale ones mislead
        as much as none. A full ANALYZE of a 1M-lead SQLite table takes ~1.8 s (writes wait)."""
        preparer = self.engine.dialect.identifier_preparer
        stale: list[tuple[str, int | None, int]] = []
        with self.read() as connection:
            recorded = self._analyzed_rows(connection, preparer)
            for table in tables:
                name = preparer.format_table(table)
                rows = int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
                before = recorded(table, name)
                if before is None and rows > 0 or before is not None and not before / 2 <= rows <= before * 2:
                    stale.append((name, before, rows))
        for name, _, _ in stale:
            with self.write() as connection:
                connection.exec_driver_sql(f"ANALYZE {name}")
        return [f"{name}: {'none' if before is None else f'{before:,}'} → {rows:,} rows"
                for name, before, rows in stale]

    def _analyzed_rows(self, connection: sa.Connection, preparer: Any) -> Callable[[sa.Table, str], int | None]:
        """The row count each table's statistics were taken at (None: never analyzed)."""
        if self.is_sqlite:
            has_stats = connection.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'").first()
            counts: dict[str, int] = dict(connection.exec_driver_sql(  # stat "rows per-column…": its first number
                "SELECT tbl, max(CAST(stat AS INTEGER)) FROM sqlite_stat1 GROUP BY tbl").all()) if has_stats else {}
            return lambda table, _name: counts.get(table.name)

        def analyzed(_table: sa.Table, name: str) -> int | None:
            found = connection.exec_driver_sql(  # -1 until the first ANALYZE (PostgreSQL 14+), 0 on older ones
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%(name)s)", {"name": name}).scalar()
            return int(found) if found is not None and found > 0 else None
        return analyzed

    def lookup(self, statement: Prepared, params: Mapping[str, Any]) -> Any:
        """The first row of one prepared SELECT, outside any transaction (a single statement reads a
        consistent snapshot by itself): the per-request user and token look-ups. On SQLite each
        thread keeps a connection of its own for them, outside the pool (so they never crowd out
        the pool's), and a look-up is one statement and nothing else."""
        if not self.is_sqlite:
            with self.engine.connect() as connection:
                return statement.first(connection, params)
        dbapi_connection = getattr(self._lookups, "connection", None)
        if dbapi_connection is None:
            pooled = self.engine.raw_connection()  # configured by the connect event (pragmas)
            dbapi_connection = self._lookups.connection = pooled.dbapi_connection
            pooled.detach()
            with self._write_lock:
                self._lookup_connections.append(dbapi_connection)
        try:
            rows = statement.on_driver(dbapi_connection, self.engine.dialect, params)
        except sa.exc.DBAPIError:
            self._lookups.connection = None  # a broken connection is replaced at the next look-up
            raise
        return rows[0] if rows else None

    async def run(self, function: Callable[..., T], *args: Any, write: bool = False, **kwargs: Any) -> T:
        """Run `function` from async code without blocking the event loop on the database.
        SQLite writes run inline when the write lock is free at once (joining this turn's group
        commit, and returning once it committed), else on the writer thread; the rest runs in
        the thread pool. A `write` function must do nothing but reads before its first
        `write()` (a busy attempt is retried from the start)."""
        if not (write and self.is_sqlite):
            return await run_in_threadpool(function, *args, **kwargs)
        attempt = self._attempt
        attempt.nowait, attempt.loop, attempt.group = True, asyncio.get_running_loop(), None
        busy = False  # the no-wait attempt found the database busy
        error: BaseException | None = None
        try:
            result = function(*args, **kwargs)
        except WriteBusy:
            busy = True
        except BaseException as failure:  # re-raised once what the call did write is committed
            error = failure
        finally:
            group = attempt.group
            attempt.nowait, attempt.loop, attempt.group = False, None, None
        if group is not None:
            await group.done
        if error is not None:
            raise error
        if not busy:
            return result
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        return await asyncio.get_running_loop().run_in_executor(self._writer,
                                                                functools.partial(function, *args, **kwargs))

    def dispose(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        with self._write_lock:
            for connection in [self._write_connection, *self._lookup_connections]:
                if connection is not None:
                    connection.close()
            self._write_connection, self._lookup_connections = None, []
            self._lookups = threading.local()
        self.engine.dispose()

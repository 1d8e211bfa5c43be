"""Prepared statements for the hottest paths, run on the driver's own cursor.

A statement run per record or per timer (the audit event, the outbox row, a clock, a user or a
dedup look-up) spends ~50 µs in SQLAlchemy's execution machinery around a ~8 µs SQLite call
(measured on the benchmark machine, bench/RESULTS.md). `Prepared` compiles a Core statement
once per dialect with SQLAlchemy and then executes the SQL text on the DBAPI cursor of the
caller's connection — inside the caller's transaction — converting parameters and results with
the very type processors SQLAlchemy would use, so what is stored and read is identical.
Driver errors are re-raised as SQLAlchemy's (`sa.exc.IntegrityError`, …), as callers expect.

Limits, checked when compiling: no expanding (IN-list) parameters, no Python-side column
defaults that the statement would need (pass every value explicitly).

Deferred writes: inside `deferring(connection)`, `run_later` holds a write back instead of
sending it, and `flush_deferred(connection)` sends what is held as one executemany per
statement (on PostgreSQL, pipelined: one round trip instead of one per row). For writes
whose result nobody needs and whose rows nobody reads before the flush — audit events,
outbox rows — when a batch writes many (the worker firing 500 timers).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


@dataclass(slots=True)
class _Compiled:
    sql: str
    positional: bool
    fixed: Mapping[str, Any]                      # values written into the statement (`.values(status="x")`)
    binders: tuple[tuple[str, Callable[[Any], Any]], ...]  # named parameters (PostgreSQL) with a processor
    names: tuple[str, ...]                        # positional: the parameters in placeholder order
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # positional: (place, processor) of those with one
    columns: tuple[str, ...]                      # names of the result columns
    types: tuple[Any, ...]                        # their SQLAlchemy types
    row_type: Any                                 # a namedtuple of the result columns, or None
    readers: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None  # known after the first fetch


class Prepared:
    """One statement, compiled once per dialect; see the module's docstring. An INSERT or
    UPDATE names the `columns` it sets from parameters (those not fixed in `.values()`)."""

    def __init__(self, statement: sa.ClauseElement, columns: Sequence[str] = ()) -> None:
        self.statement = statement
        self.columns = tuple(columns)
        self._compiled: dict[Dialect, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _compile(self.statement, self.columns, dialect)
        return compiled

    def _execute(self, connection: sa.Connection, params: Mapping[str, Any] | None, fetch: bool,
                 as_dict: bool = False) -> Any:
        return self.on_driver(connection.connection.dbapi_connection, connection.dialect, params, fetch,
                              as_dict)

    def on_driver(self, dbapi_connection: Any, dialect: Dialect, params: Mapping[str, Any] | None,
                  fetch: bool = True, as_dict: bool = False) -> Any:
        """Run on a bare DBAPI connection of this dialect: rows (or the row count when not `fetch`)."""
        compiled = self._compiled.get(dialect) or self._for(dialect)
        values = _bound(compiled, params or {})
        cursor = dbapi_connection.cursor()  # (not _driver_cursor: a context manager costs ~5 % of a statement)
        try:
            cursor.execute(compiled.sql, values)
            if not fetch:
                return cursor.rowcount
            if compiled.readers is None:  # PostgreSQL's processors depend on the column type codes
                compiled.readers = _readers(compiled, cursor.description, dialect)
            raws = cursor.fetchall()
        except dialect.loaded_dbapi.Error as error:
            raise _driver_error(compiled, values, error, dialect) from error
        finally:
            cursor.close()
        rows = [_values(compiled, raw) for raw in raws] if compiled.readers else raws
        if as_dict:
            return [dict(zip(compiled.columns, row)) for row in rows]
        return [compiled.row_type._make(row) for row in rows]

    def rows(self, connection: sa.Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every result row, with attribute access by column name (like SQLAlchemy's Row)."""
        rows: list[Any] = self._execute(connection, params, fetch=True)
        return rows

    def first(self, connection: sa.Connection, params: Mapping[str, Any] | None = None) -> Any:
        rows = self._execute(connection, params, fetch=True)
        return rows[0] if rows else None

    def mapping(self, connection: sa.Connection, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The first row as a dict keyed by column name (any name, even one Python reserves), or None."""
        rows = self._execute(connection, params, fetch=True, as_dict=True)
        return rows[0] if rows else None

    def scalar(self, connection: sa.Connection, params: Mapping[str, Any] | None = None) -> Any:
        row = self.first(connection, params)
        return None if row is None else row[0]

    def run(self, connection: sa.Connection, params: Mapping[str, Any] | None = None) -> int:
        """Execute a statement without results; the number of rows it changed."""
        count: int = self._execute(connection, params, fetch=False)
        return count

    def run_later(self, connection: sa.Connection, params: Mapping[str, Any]) -> None:
        """`run`, unless writes on this connection are being deferred (see the module's docstring)."""
        deferred = _deferred.get()
        if deferred is None or deferred.connection is not connection:
            self.run(connection, params)
        else:
            deferred.pending.setdefault(self, []).append(params)

    def run_many(self, connection: sa.Connection, batch: Sequence[Mapping[str, Any]]) -> None:
        if not batch:
            return
        compiled = self._for(connection.dialect)
        values = [_bound(compiled, params) for params in batch]
        with _driver_cursor(connection.connection.dbapi_connection, connection.dialect, compiled,
                            values[0]) as cursor:
            cursor.executemany(compiled.sql, values)


@dataclass(eq=False)
class _Deferred:
    connection: sa.Connection
    pending: dict[Prepared, list[Mapping[str, Any]]]


_deferred: contextvars.ContextVar[_Deferred | None] = contextvars.ContextVar("crm_deferred_writes", default=None)


@contextlib.contextmanager
def deferring(connection: sa.Connection) -> Iterator[None]:
    """Hold back `run_later` writes on `connection` until `flush_deferred`; what is still held
    when the block ends is sent then, unless the block raised (then it is dropped, as the
    caller's rollback would drop it)."""
    deferred = _Deferred(connection, {})
    token = _deferred.set(deferred)
    try:
        yield
        flush_deferred(connection)
    finally:
        _deferred.reset(token)


def discard_deferred(connection: sa.Connection) -> None:
    """Drop the writes held back on `connection` (a savepoint they were made in rolled back)."""
    deferred = _deferred.get()
    if deferred is not None and deferred.connection is connection:
        deferred.pending.clear()


def flush_deferred(connection: sa.Connection) -> None:
    """Send the writes held back on `connection`, in the order each statement was first held."""
    deferred = _deferred.get()
    if deferred is None or deferred.connection is not connection:
        return
    pending, deferred.pending = deferred.pending, {}
    for statement, batch in pending.items():
        statement.run_many(connection, batch)


@contextlib.contextmanager
def _driver_cursor(dbapi_connection: Any, dialect: Dialect, compiled: _Compiled, shown: Any) -> Iterator[Any]:
    """A cursor on a DBAPI connection; driver errors come out as SQLAlchemy's."""
    cursor = dbapi_connection.cursor()
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as error:
        raise _driver_error(compiled, shown, error, dialect) from error
    finally:
        cursor.close()


def _driver_error(compiled: _Compiled, shown: Any, error: Exception, dialect: Dialect) -> sa.exc.StatementError:
    """The driver's error as SQLAlchemy would raise it (IntegrityError, OperationalError, …)."""
    return sa.exc.DBAPIError.instance(compiled.sql, shown, error, dialect.loaded_dbapi.Error, dialect=dialect)


def _compile(statement: sa.ClauseElement, columns: tuple[str, ...], dialect: Dialect) -> _Compiled:
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(columns) or None)
    binds = compiled.bind_names  # BindParameter → the name in the SQL
    if any(getattr(bind, "expanding", False) for bind in binds):
        raise ValueError("Prepared does not take expanding (IN-list) parameters; use connection.execute")
    fixed = {name: bind.effective_value for bind, name in binds.items() if not bind.required}
    positional = bool(dialect.positional)
    escaped = getattr(compiled, "escaped_bind_names", None) or {}
    if escaped and not positional:
        raise ValueError("Prepared needs plain parameter names")
    binders = tuple((name, _faster(process)) for name, process in compiled._bind_processors.items()
                    if process is not None)
    columns = tuple(column[0] for column in compiled._result_columns)
    types = tuple(column[3] for column in compiled._result_columns)
    row_type = collections.namedtuple("Row", columns, rename=True) if columns else None
    processors = dict(binders)
    names = tuple(compiled.positiontup) if positional else ()
    processed = tuple((index, processors[name]) for index, name in enumerate(names) if name in processors)
    return _Compiled(compiled.string, positional, fixed, binders, names, processed, columns, types, row_type)


def _faster(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLAlchemy's processor, with a fast path where it is slow for the common value: SQLite's
    DATETIME formats naive datetimes through a %-format of seven attributes (the same text as
    isoformat with microseconds), Boolean checks and converts in two calls."""
    owner = getattr(process, "__qualname__", "")
    if owner == "DATETIME.bind_processor.<locals>.process" and process(_PROBE) == _PROBE.isoformat(" ", "microseconds"):
        def datetime_text(value: Any) -> Any:
            if value.__class__ is dt.datetime and value.tzinfo is None:
                return value.isoformat(" ", "microseconds")
            return process(value)
        return datetime_text
    if owner == "Boolean.bind_processor.<locals>.process" and type(process(True)) is int:  # SQLite: 1/0
        def boolean(value: Any) -> Any:
            return 1 if value is True else 0 if value is False else process(value)
        return boolean
    return process


_PROBE = dt.datetime(2026, 1, 2, 3, 4, 5, 60708)


def _readers(compiled: _Compiled, description: Any, dialect: Dialect) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    readers = []
    for index, type_ in enumerate(compiled.types):
        process = type_._cached_result_processor(dialect, description[index][1] if description else None)
        if process is not None:
            readers.append((index, process))
    return tuple(readers)


def _bound(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
    if compiled.positional:  # SQLite: a list in parameter order, each value through its processor
        if compiled.fixed:
            params = {**compiled.fixed, **params}
        try:
            ordered = [params[name] for name in compiled.names]
        except KeyError as missing:
            raise sa.exc.ArgumentError(f"a value is required for the parameter '{missing.args[0]}'") from None
        for index, process in compiled.processed:
            ordered[index] = process(ordered[index])
        return ordered
    values = {**compiled.fixed, **params} if compiled.fixed else dict(params)
    for name, process in compiled.binders:
        if name in values:
            values[name] = process(values[name])
    return values


def _values(compiled: _Compiled, raw: Sequence[Any]) -> Sequence[Any]:
    if compiled.readers:
        raw = list(raw)
        for index, process in compiled.readers:
            raw[index] = process(raw[index])
    return raw

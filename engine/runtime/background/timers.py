"""Timer rows in the database and firing them exactly once.

A timer is fired inside one transaction that also marks it fired: the handler's effect
and the mark commit together or not at all. On PostgreSQL the due rows are taken with
`FOR UPDATE SKIP LOCKED`, so several workers share the work without ever taking the same
row; on SQLite the write transaction itself is the single writer. A worker killed mid-tick
leaves its transaction uncommitted, so its timers are still pending for the next tick.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ContextManager

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.rules.timers import DueTimer, TimerRequest
from engine.runtime.storage.times import as_utc
from engine.runtime.storage.database import Database, savepoint
from engine.runtime.storage.prepared import Prepared, deferring
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

TimerHandler = Callable[[sa.Connection, DueTimer, dt.datetime], None]
BatchHook = Callable[[sa.Connection, list[DueTimer], dt.datetime], ContextManager[None]]
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class BatchedHandler:
    """A timer handler with a hook that a batch of its timers is fired inside: it can read at
    once, before the first timer fires, what each of them would read on its own."""

    fire: TimerHandler
    batch: BatchHook

    def __call__(self, connection: sa.Connection, timer: DueTimer, now: dt.datetime) -> None:
        self.fire(connection, timer, now)


@dataclass
class _Touched:
    """The timer keys that handlers of the batch being fired scheduled, and the prefixes they cancelled."""

    keys: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    due: bool = False  # a handler scheduled a timer that is already due (fired in the same tick)

    def hits(self, key: str) -> bool:
        """Scheduled, or under a cancelled prefix (each of the key's own prefixes looked up: a
        batch that cancels per record must not cost timers × cancellations)."""
        return key in self.keys or bool(self.prefixes) and any(
            key[:end] in self.prefixes for end in range(1, len(key) + 1))


_touched: contextvars.ContextVar[_Touched | None] = contextvars.ContextVar("crm_touched_timers", default=None)



@dataclass(frozen=True, slots=True)
class FireReport:
    fired: int
    failed: int
    remaining_due: bool


class SqlTimerStore:
    """The TimerStore port on the engine's own table."""

    def __init__(self, schema: Schema, clock_now: Callable[[], dt.datetime]) -> None:
        self.table = schema.timers
        self.now = clock_now
        self._statements: dict[str, Prepared] = {}

    def schedule(self, connection: sa.Connection, *requests: TimerRequest) -> None:
        if not requests:
            return
        touched = _touched.get()
        created = naive_utc(self.now())
        if touched is not None:
            touched.keys.update(request.key for request in requests)
            touched.due = touched.due or any(naive_utc(request.due_at) <= created for request in requests)
        self._upsert(connection.dialect.name).run_many(connection, [
            {"kind": request.kind, "key": request.key, "entity": request.entity, "record_id": request.record_id,
             "due_at": naive_utc(request.due_at), "payload": request.payload, "status": "pending", "attempts": 0,
             "created_at": created} for request in requests])

    def _upsert(self, dialect: str) -> Prepared:
        """Insert, or move a timer that has not fired yet; built once per dialect (bound parameters)."""
        statement = self._statements.get(dialect)
        if statement is None:
            insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(self.table)
            statement = Prepared(insert.on_conflict_do_update(
                index_elements=[self.table.c.key],
                set_={"due_at": insert.excluded.due_at, "payload": insert.excluded.payload,
                      "kind": insert.excluded.kind, "status": "pending", "attempts": 0, "last_error": None},
                where=self.table.c.status != "fired"),
                columns=("kind", "key", "entity", "record_id", "due_at", "payload", "status", "attempts", "created_at"))
            self._statements[dialect] = statement
        return statement

    def fired_keys(self, connection: sa.Connection, key_prefix: str, entity: str, record_id: int) -> set[str]:
        """The keys under `key_prefix` of one record's timers that have fired."""
        statement = self._statements.get("fired")
        if statement is None:
            table = self.table
            statement = self._statements["fired"] = Prepared(sa.select(table.c.key).where(
                table.c.entity == sa.bindparam("c_entity"), table.c.record_id == sa.bindparam("c_record_id"),
                table.c.status == "fired"))
        return {row.key for row in statement.rows(connection, {"c_entity": entity, "c_record_id": record_id})
                if row.key.startswith(key_prefix)}

    def cancel(self, connection: sa.Connection, key_prefix: str, entity: str | None = None,
               record_id: int | None = None) -> int:
        """Cancel pending timers whose key starts with `key_prefix`. Give the record the keys
        belong to: the timers are then found through the record's index. A key prefix alone is
        matched against every pending timer (21 ms per cancel at 100,000 pending, bench/RESULTS.md)."""
        touched = _touched.get()
        if touched is not None:
            touched.prefixes.add(key_prefix)
        pattern = key_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        by_record = entity is not None and record_id is not None
        name = f"cancel:{by_record}" + (":postgresql" if connection.dialect.name == "postgresql" else "")
        statement = self._statements.get(name)
        if statement is None:
            table = self.table
            where: list[sa.ColumnElement[bool]] = [table.c.key.like(sa.bindparam("pattern"), escape="\\")]
            if by_record:  # (status wrapped: SQLite would rather walk every pending timer by ix_crm_timers_due)
                where += [table.c.entity == sa.bindparam("c_entity"), table.c.record_id == sa.bindparam("c_record_id"),
                          sa.func.coalesce(table.c.status, "") == "pending"]
            else:
                where.append(table.c.status == "pending")
            update = table.update().values(status="cancelled")
            if connection.dialect.name == "postgresql":
                # rows another worker is firing are skipped, not waited for: waiting could deadlock
                # two workers; such a timer is fenced when it fires (its record's earlier timers
                # first, then the handler's own re-check of the clock's cycle)
                update = update.where(table.c.id.in_(sa.select(table.c.id).where(*where)
                                                     .with_for_update(skip_locked=True).scalar_subquery()))
            else:
                update = update.where(*where)
            statement = self._statements[name] = Prepared(update)
        params = {"pattern": pattern, **({"c_entity": entity, "c_record_id": record_id} if by_record else {})}
        return statement.run(connection, params)


def _due_query(table: sa.Table, now: dt.datetime, limit: int, dialect: str) -> sa.Select[Any]:
    query = (sa.select(table).where(table.c.status == "pending", table.c.due_at <= naive_utc(now))
             .order_by(table.c.due_at, table.c.id).limit(limit))
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


def _timer(row: Any) -> DueTimer:
    return DueTimer(row.id, row.kind, row.key, as_utc(row.due_at) or row.due_at, row.entity, row.record_id,
                    dict(row.payload or {}), row.attempts)


def _in_record_order(connection: sa.Connection, table: sa.Table, timers: list[DueTimer]) -> list[DueTimer]:
    """The timers of the batch that may fire now: a record's timers fire in due order, so a
    timer waits (stays pending, for the next tick) while an earlier timer of its record is
    pending outside this batch — held by another worker, whose breach may yet reassign the
    record and restart its clock. One worker never defers anything (its batch is the earliest
    of all); several workers then give the same outcome as one."""
    by_entity: dict[str, set[int]] = {}
    for timer in timers:
        if timer.entity is not None and timer.record_id is not None:
            by_entity.setdefault(timer.entity, set()).add(timer.record_id)
    if not by_entity:
        return timers
    ours = [timer.id for timer in timers]
    latest = max(timer.due_at for timer in timers)
    earliest_elsewhere: dict[tuple[str, int], tuple[dt.datetime, int]] = {}
    for entity, ids in by_entity.items():
        rows = connection.execute(
            sa.select(table.c.record_id, table.c.due_at, table.c.id)
            .where(table.c.entity == entity, table.c.record_id.in_(sorted(ids)), table.c.status == "pending",
                   table.c.due_at <= naive_utc(latest), table.c.id.not_in(ours)))
        for record_id, due_at, timer_id in rows:
            mark = (as_utc(due_at) or due_at, timer_id)
            key = (entity, record_id)
            if key not in earliest_elsewhere or mark < earliest_elsewhere[key]:
                earliest_elsewhere[key] = mark
    if not earliest_elsewhere:
        return timers
    return [timer for timer in timers
            if (timer.entity, timer.record_id) not in earliest_elsewhere
            or (timer.due_at, timer.id) < earliest_elsewhere[(str(timer.entity), int(timer.record_id or 0))]]


def fire_due_timers(db: Database, schema: Schema, handlers: Mapping[str, TimerHandler], now: dt.datetime, *,
                    worker: str, limit: int = 500) -> FireReport:
    """Fire up to `limit` due timers, oldest first, each exactly once; a handler that raises
    leaves its timer pending for a later tick (dead after MAX_ATTEMPTS, with the error kept).

    The batch is first fired under one savepoint, set-wise (`_fire_batch`); only if a handler
    raises is it rolled back and fired again one savepoint per timer, so the failure is
    isolated and recorded. (A savepoint per timer costs two statements each — on PostgreSQL,
    two round trips.) A timer that an earlier timer of the same batch moved or cancelled (a
    breach re-grading the record re-schedules its escalation) is not fired now: it keeps its
    new time."""
    table = schema.timers
    mark_fired, mark_failed = _firing_statements(table)
    with db.write() as connection:
        rows = connection.execute(_due_query(table, now, limit, connection.dialect.name)).all()
        timers = [_timer(row) for row in rows]
        if connection.dialect.name == "postgresql":
            timers = _in_record_order(connection, table, timers)
        try:
            touched = _Touched()
            with savepoint(connection):
                fired = _fire_batch(connection, table, timers, handlers, now, worker, mark_fired, touched)
            return FireReport(fired, 0, len(rows) == limit or touched.due)
        except Exception:  # noqa: BLE001 — some handler failed: isolate it below
            pass
        fired = failed = 0
        touched = _Touched()
        token = _touched.set(touched)  # (only to learn whether a handler scheduled a timer already due)
        for timer in timers:
            try:
                with savepoint(connection):
                    fired += _fire(connection, timer, handlers, now, worker, mark_fired)
            except Exception as exc:  # the handler's failure is recorded, not lost
                failed += 1
                attempts = timer.attempts + 1
                mark_failed.run(connection, {
                    "timer_id": timer.id, "attempts": attempts, "last_error": f"{type(exc).__name__}: {exc}"[:2000],
                    "due_at": naive_utc(now + dt.timedelta(minutes=2 ** attempts)),
                    "status": "dead" if attempts >= MAX_ATTEMPTS else "pending"})
        _touched.reset(token)
    return FireReport(fired, failed, len(rows) == limit or touched.due)


def _fire_batch(connection: sa.Connection, table: sa.Table, timers: list[DueTimer],
                handlers: Mapping[str, TimerHandler], now: dt.datetime, worker: str, mark_fired: Prepared,
                touched: _Touched) -> int:
    """Fire a batch in few statements: each BatchedHandler's hook reads ahead for its timers,
    events and messages are held back and sent together (prepared.deferring), and the timers
    are marked fired together at the end — the rows are ours (locked on PostgreSQL, the
    write lock on SQLite), so each is still pending and due unless a handler of this batch
    scheduled or cancelled its key; such a timer is checked and marked on its own (`_fire`)."""
    token = _touched.set(touched)
    fired, unmarked = 0, []
    try:
        with contextlib.ExitStack() as stack:
            hooks: dict[BatchHook, list[DueTimer]] = {}
            for timer in timers:
                handler = handlers.get(timer.kind)
                if isinstance(handler, BatchedHandler):
                    hooks.setdefault(handler.batch, []).append(timer)
            for hook, own in hooks.items():
                stack.enter_context(hook(connection, own, now))
            stack.enter_context(deferring(connection))  # left first: flushed before the hooks end
            for timer in timers:
                if touched.hits(timer.key):
                    fired += _fire(connection, timer, handlers, now, worker, mark_fired)
                    continue
                handler = handlers.get(timer.kind)
                if handler is None:
                    raise LookupError(f"no handler for timer kind '{timer.kind}'")
                handler(connection, timer, now)
                unmarked.append(timer.id)
                fired += 1
    finally:
        _touched.reset(token)
    if unmarked:
        connection.execute(_mark_all(table), {"ids": unmarked, "fired_at": naive_utc(now), "fired_by": worker})
    return fired


def _fire(connection: sa.Connection, timer: DueTimer, handlers: Mapping[str, TimerHandler], now: dt.datetime,
          worker: str, mark_fired: Prepared) -> bool:
    """Mark the timer fired — only if it is still pending and due as stored now — then run its
    handler (in the caller's savepoint: a failing handler undoes the mark). False if skipped."""
    handler = handlers.get(timer.kind)
    if handler is None:
        raise LookupError(f"no handler for timer kind '{timer.kind}'")
    marked = mark_fired.run(connection, {"timer_id": timer.id, "fired_at": naive_utc(now), "fired_by": worker,
                                         "now": naive_utc(now)})
    if marked != 1:
        return False
    handler(connection, timer, now)
    return True


@functools.lru_cache(maxsize=16)
def _firing_statements(table: sa.Table) -> tuple[Prepared, Prepared]:
    """Marking a timer fired (if still pending and due), and failed, built once with bound parameters."""
    by_id = table.update().where(table.c.id == sa.bindparam("timer_id"))
    still_due = by_id.where(table.c.status == "pending", table.c.due_at <= sa.bindparam("now"))
    return (Prepared(still_due.values(status="fired", fired_at=sa.bindparam("fired_at"),
                                      fired_by=sa.bindparam("fired_by"))),
            Prepared(by_id.values(attempts=sa.bindparam("attempts"), last_error=sa.bindparam("last_error"),
                                  due_at=sa.bindparam("due_at"), status=sa.bindparam("status"))))


@functools.lru_cache(maxsize=16)
def _mark_all(table: sa.Table) -> sa.Update:
    """Marking a batch's timers fired, by id (they are known to be pending and due: `_fire_batch`)."""
    return table.update().where(table.c.id.in_(sa.bindparam("ids", expanding=True))).values(
        status="fired", fired_at=sa.bindparam("fired_at"), fired_by=sa.bindparam("fired_by"))

"""Per-record clocks in the database: the crm_clocks rows, and what screens and lists ask of them.

One row per (kind, entity, record, policy-or-cadence) holds the current cycle: when it
started, its tier, its pauses, running/paused/stopped, the breach moment. Lists filter on
it (`sla_condition`: "overdue", "due_within:1h"), the record page shows it
(`sla_summary`, `cadence_summary`). Also here: blueprint calendars and SLA specs turned
into the rules' `BusinessCalendar` and `SlaPolicy`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.metamodel import Metamodel
from engine.metamodel.durations import parse_duration
from engine.metamodel.messages import Msg
from engine.rules.calendars import build_calendar
from engine.rules.clocks import ClockSnapshot, Pause
from engine.runtime.storage.times import as_utc
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc
from engine.rules.timers import DueTimer
from engine.runtime.records.service import RecordService
from engine.rules.clocks import ACTIVE, ClockState

_UTC = dt.timezone.utc


def naive(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else naive_utc(moment)


# --------------------------------------------------------------------------- blueprint → rules objects


def calendar_warnings(model: Metamodel, today: dt.date) -> list[Msg]:
    """Loud warnings for this year and next whose holidays a calendar only assumes (for `crm doctor`)."""
    warnings: list[Msg] = []
    for decl in model.calendars:
        warnings += build_calendar(decl).coverage_warnings([today.year, today.year + 1])
    return warnings


# --------------------------------------------------------------------------- the crm_clocks rows

def pauses_to_json(pauses: tuple[Pause, ...]) -> list[list[str | None]]:
    return [[p.start.astimezone(_UTC).isoformat(), p.end.astimezone(_UTC).isoformat() if p.end else None]
            for p in pauses]


def pauses_from_json(raw: Any) -> tuple[Pause, ...]:
    return tuple(Pause(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end) if end else None)
                 for start, end in (raw or []))


@functools.lru_cache(maxsize=16)
def _clock_row(table: sa.Table) -> Prepared:
    return Prepared(sa.select(table).where(*(table.c[name] == sa.bindparam(name)
                                             for name in ("kind", "entity", "record_id", "name"))))


def load_clock(connection: sa.Connection, schema: Schema, kind: str, entity: str, record_id: int,
               name: str) -> ClockSnapshot | None:
    row = _clock_row(schema.clocks).first(connection, {"kind": kind, "entity": entity, "record_id": record_id,
                                                       "name": name})
    return None if row is None else _snapshot(row)


def load_clocks(connection: sa.Connection, schema: Schema, kind: str, entity: str,
                record_ids: Iterable[int]) -> dict[tuple[int, str], ClockSnapshot]:
    """Every `kind` clock of these records, in one statement: (record id, name) → clock."""
    table = schema.clocks
    rows = connection.execute(sa.select(table).where(table.c.kind == kind, table.c.entity == entity,
                                                     table.c.record_id.in_(sorted(set(record_ids)))))
    return {(row.record_id, row.name): _snapshot(row) for row in rows}


def _snapshot(row: Any) -> ClockSnapshot:
    return ClockSnapshot(as_utc(row.started_at), ClockState(row.state), row.tier, pauses_from_json(row.pauses),
                         as_utc(row.breached_at))


def save_clock(connection: sa.Connection, schema: Schema, kind: str, entity: str, record_id: int, name: str,
               clock: ClockSnapshot, now: dt.datetime, *, due_at: dt.datetime | None = None,
               reason: str = "", met: bool | None = None) -> None:
    """Write the clock's current cycle (insert the first time, else update)."""
    _clock_upsert(schema.clocks, connection.dialect.name).run(connection, {
        "kind": kind, "entity": entity, "record_id": record_id, "name": name,
        "started_at": naive(clock.started_at), "tier": clock.tier, "pauses": pauses_to_json(clock.pauses),
        "state": clock.state, "due_at": naive(due_at), "breached_at": naive(clock.breached_at),
        "stopped_at": naive(now) if clock.state in (ClockState.STOPPED, ClockState.CANCELLED, ClockState.DONE) else None,
        "met": met, "reason": reason[:255], "updated_at": naive(now)})


@functools.lru_cache(maxsize=16)
def _clock_upsert(table: sa.Table, dialect: str) -> Any:
    """INSERT … ON CONFLICT (the clock's key) DO UPDATE, built once per table and dialect."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    key = ("kind", "entity", "record_id", "name")
    values = [column.name for column in table.columns if column.name not in key and column.name != "id"]
    return Prepared(insert.on_conflict_do_update(index_elements=[table.c[name] for name in key],
                                                 set_={name: insert.excluded[name] for name in values}),
                    columns=(*key, *values))


def mark_breached(connection: sa.Connection, schema: Schema, entity: str, record_id: int, name: str,
                  now: dt.datetime) -> None:
    """Note the breach moment on the SLA clock (held back while the caller defers writes)."""
    _breach_update(schema.clocks).run_later(connection, {"b_entity": entity, "b_record_id": record_id, "b_name": name,
                                                   "breached_at": naive(now)})


@functools.lru_cache(maxsize=16)
def _breach_update(table: sa.Table) -> Prepared:
    return Prepared(table.update().where(table.c.kind == "sla", table.c.entity == sa.bindparam("b_entity"),
                                         table.c.record_id == sa.bindparam("b_record_id"),
                                         table.c.name == sa.bindparam("b_name")), columns=("breached_at",))


# --------------------------------------------------------------------------- lists and the record page

def sla_condition(schema: Schema, entity: str, table: sa.Table, which: str, now: dt.datetime,
                  policy: str | None = None) -> sa.ColumnElement[bool]:
    """A WHERE condition on `table` (the entity's table) for records whose SLA is `which`:
    "overdue", "due_within:<duration>" (e.g. due_within:1h), "paused" or "running";
    or, for SLA attainment, "settled", "met" or "missed" (optionally `:<policy>`, e.g.
    met:lead_first_call): a clock is settled once it stopped (met or not), breached, or runs past
    its due time (a breach the worker has not noted yet); a record's SLA is met when it has a settled clock and none missed, else missed (so
    met + missed = settled); `policy` narrows it to one SLA."""
    clocks = schema.clocks
    kind, _, named = which.partition(":")
    if kind in ("settled", "met", "missed"):
        return _attainment_condition(schema, entity, table, kind, named or policy, now)
    base = [clocks.c.kind == "sla", clocks.c.entity == entity, clocks.c.record_id == table.c.id]
    if policy is not None:
        base.append(clocks.c.name == policy)
    moment = naive(now)
    if which == "overdue":
        condition = sa.or_(sa.and_(clocks.c.state == ClockState.RUNNING, clocks.c.due_at <= moment),
                           sa.and_(clocks.c.state.in_(ACTIVE), clocks.c.breached_at.is_not(None)))
    elif which.startswith("due_within:"):
        window = parse_duration(which.split(":", 1)[1]).fixed
        condition = sa.and_(clocks.c.state == ClockState.RUNNING, clocks.c.due_at > moment,
                            clocks.c.due_at <= naive(now + window))
    elif which in (ClockState.PAUSED, ClockState.RUNNING):
        condition = clocks.c.state == ClockState(which)
    else:
        raise ValueError(f"unknown SLA filter '{which}'; use overdue, due_within:1h, paused, running, "
                         "settled, met or missed (met:<policy> for one SLA)")
    return sa.exists().where(*base, condition)


def _attainment_condition(schema: Schema, entity: str, table: sa.Table, kind: str,
                          policy: str | None, now: dt.datetime) -> sa.ColumnElement[bool]:
    clocks = schema.clocks
    base = [clocks.c.kind == "sla", clocks.c.entity == entity, clocks.c.record_id == table.c.id]
    if policy:
        base.append(clocks.c.name == policy)
    late = sa.and_(clocks.c.state == ClockState.RUNNING, clocks.c.due_at <= naive(now))
    missed = sa.exists().where(*base, sa.or_(clocks.c.met.is_(False), clocks.c.breached_at.is_not(None), late))
    if kind == "missed":
        return missed
    settled = sa.exists().where(*base, sa.or_(clocks.c.met.is_not(None), clocks.c.breached_at.is_not(None), late))
    return settled if kind == "settled" else sa.and_(settled, sa.not_(missed))


def sla_due_order(schema: Schema, entity: str, table: sa.Table) -> sa.ScalarSelect[Any]:
    """`sort=sla_due`: the earliest due time of the record's running SLA clocks (overdue first
    when ascending; records without a running clock last)."""
    clocks = schema.clocks
    return sa.select(sa.func.min(clocks.c.due_at)).where(
        clocks.c.kind == "sla", clocks.c.entity == entity, clocks.c.record_id == table.c.id,
        clocks.c.state == ClockState.RUNNING).scalar_subquery()


def sla_states(connection: sa.Connection, schema: Schema, entity: str, record_ids: list[int]
               ) -> dict[int, tuple[str, dt.datetime | None, str]]:
    """Per record, its most urgent active SLA clock: (state, due time, policy) — state one of
    running, paused, breached (a breach noted while the clock still runs)."""
    clocks = schema.clocks
    rows = connection.execute(sa.select(clocks.c.record_id, clocks.c.state, clocks.c.due_at, clocks.c.breached_at,
                                        clocks.c.name)
                              .where(clocks.c.kind == "sla", clocks.c.entity == entity,
                                     clocks.c.record_id.in_(record_ids), clocks.c.state.in_(ACTIVE))
                              .order_by(clocks.c.due_at)).all()
    states: dict[int, tuple[str, dt.datetime | None, str]] = {}
    for row in rows:
        if row.record_id in states:
            continue
        state = "breached" if row.breached_at is not None else str(row.state)
        states[row.record_id] = (state, as_utc(row.due_at) if row.due_at is not None else None, str(row.name))
    return states


# --------------------------------------------------------------------------- reading ahead for a batch of timers

ClockKey = tuple[str, str, int, str]  # kind, entity, record id, policy or cadence name


@dataclasses.dataclass(eq=False)
class _ReadAhead:
    """What a batch of timers reads, read in a few statements before the first one fires
    (`ClockStore.batch`); an entry is dropped when the batch writes what it holds."""

    connection: sa.Connection
    clocks: dict[ClockKey, ClockSnapshot | None]
    records: dict[tuple[str, int], dict[str, Any] | None]
    users: dict[int, Any]


_read_ahead: contextvars.ContextVar[_ReadAhead | None] = contextvars.ContextVar("crm_read_ahead", default=None)


class ClockStore:
    """The crm_clocks rows as the SLA and cadence observers read and write them, and — while a
    batch of timers fires — their clocks, records, owners and managers read ahead in a few
    statements instead of a few per timer (on PostgreSQL each is a round trip)."""

    def __init__(self, schema: Schema, records: RecordService) -> None:
        self.schema = schema
        self.records = records
        self._keys: dict[str, Callable[[DueTimer], tuple[str, str] | None]] = {}

    def register(self, kind: str, clock_of: Callable[[DueTimer], tuple[str, str] | None]) -> None:
        """How a timer of `kind` names its clock: (entity, policy or cadence name), or None."""
        self._keys[kind] = clock_of

    def load(self, connection: sa.Connection, kind: str, entity: str, record_id: int,
             name: str) -> ClockSnapshot | None:
        ahead = _ahead(connection)
        if ahead is not None and (kind, entity, record_id, name) in ahead.clocks:
            return ahead.clocks[(kind, entity, record_id, name)]
        return load_clock(connection, self.schema, kind, entity, record_id, name)

    def save(self, connection: sa.Connection, kind: str, entity: str, record_id: int, name: str,
             clock: ClockSnapshot, now: dt.datetime, *, due_at: dt.datetime | None = None, reason: str = "",
             met: bool | None = None) -> None:
        self.forget(connection, kind, entity, record_id, name)
        save_clock(connection, self.schema, kind, entity, record_id, name, clock, now, due_at=due_at, reason=reason,
                   met=met)

    def forget(self, connection: sa.Connection, kind: str, entity: str, record_id: int, name: str) -> None:
        ahead = _ahead(connection)
        if ahead is not None:
            ahead.clocks.pop((kind, entity, record_id, name), None)

    def mark_breached(self, connection: sa.Connection, entity: str, record_id: int, name: str,
                      clock: ClockSnapshot, now: dt.datetime) -> None:
        mark_breached(connection, self.schema, entity, record_id, name, now)
        ahead = _ahead(connection)
        if ahead is not None:
            ahead.clocks[("sla", entity, record_id, name)] = dataclasses.replace(clock, breached_at=now)

    def record(self, connection: sa.Connection, entity: str, record_id: int) -> dict[str, Any] | None:
        ahead = _ahead(connection)
        if ahead is not None and (entity, record_id) in ahead.records:
            record = ahead.records[(entity, record_id)]
            return None if record is None else dict(record)
        return self.records.find(connection, entity, record_id)

    def forget_record(self, connection: sa.Connection, entity: str, record_id: int) -> None:
        ahead = _ahead(connection)
        if ahead is not None:
            ahead.records.pop((entity, record_id), None)

    def users_seen(self, connection: sa.Connection) -> dict[int, Any]:
        """User rows read for this batch (owners and managers), for the messages' recipients."""
        ahead = _ahead(connection)
        return ahead.users if ahead is not None else {}

    @contextlib.contextmanager
    def batch(self, connection: sa.Connection, timers: list[DueTimer], now: dt.datetime) -> Iterator[None]:
        """Read what these timers' handlers will read; the worker fires the batch inside this block."""
        ahead = _ReadAhead(connection, {}, {}, {})
        wanted: dict[tuple[str, str], set[int]] = {}
        for timer in timers:
            clock_of = self._keys.get(timer.kind)
            found = clock_of(timer) if clock_of is not None else None
            if found is not None and timer.record_id is not None:
                entity, name = found
                wanted.setdefault((timer.kind, entity), set()).add(timer.record_id)
                ahead.clocks[(timer.kind, entity, timer.record_id, name)] = None
        for (kind, entity), ids in wanted.items():
            for (record_id, name), clock in load_clocks(connection, self.schema, kind, entity, ids).items():
                if (kind, entity, record_id, name) in ahead.clocks:
                    ahead.clocks[(kind, entity, record_id, name)] = clock
        by_entity: dict[str, set[int]] = {}
        for (_, entity), ids in wanted.items():
            by_entity.setdefault(entity, set()).update(ids)
        for entity, ids in by_entity.items():
            found_records = self.records.find_many(connection, entity, ids)
            ahead.records.update({(entity, record_id): found_records.get(record_id) for record_id in ids})
        owners = {record["owner"] for record in ahead.records.values() if record and record.get("owner")}
        self._read_users(connection, owners, ahead.users)
        self._read_users(connection, {row.manager_id for row in ahead.users.values() if row is not None}, ahead.users)
        token = _read_ahead.set(ahead)
        try:
            yield
        finally:
            _read_ahead.reset(token)

    def _read_users(self, connection: sa.Connection, ids: set[int | None], into: dict[int, Any]) -> None:
        missing = sorted(user_id for user_id in ids if user_id is not None and user_id not in into)
        if missing:
            users = self.schema.users
            found = {row.id: row for row in connection.execute(sa.select(users).where(users.c.id.in_(missing)))}
            into.update({user_id: found.get(user_id) for user_id in missing})


def _ahead(connection: sa.Connection) -> _ReadAhead | None:
    ahead = _read_ahead.get()
    return ahead if ahead is not None and ahead.connection is connection else None

"""Per-record clocks in the database: the crm_clocks rows, and what screens and lists ask of them.

One row per (kind, entity, record, policy-or-cadence) holds the current cycle: when it
started, its tier, its pauses, running/paused/stopped, the breach moment. Lists filter on
it (`sla_condition`: "overdue", "due_within:1h"), the record page shows it
(`sla_summary`, `cadence_summary`). Also here: blueprint calendars and SLA specs turned
into the rules' `BusinessCalendar` and `SlaPolicy`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.metamodel import Metamodel
from engine.metamodel.calendars import CalendarDecl
from engine.metamodel.durations import DurationSpec, parse_duration
from engine.metamodel.sla import SlaSpec
from engine.rules.cadences import ClockSnapshot
from engine.rules.calendars import (BusinessCalendar, CalendarSpec, DayOverride, FallbackRule, HolidaySource,
                                    WorkPeriod, weekly_hours)
from engine.rules.sla import Pause, SlaPolicy, sla_state
from engine.runtime.records.fieldkinds import as_utc
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema

_UTC = dt.timezone.utc


def naive(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(_UTC).replace(tzinfo=None)


# --------------------------------------------------------------------------- blueprint → rules objects

def build_calendar(decl: CalendarDecl) -> BusinessCalendar:
    """The rules' BusinessCalendar for a blueprint calendar."""
    overrides = tuple(DayOverride(day, False, name) for day, name in decl.holidays)
    overrides += tuple(DayOverride(day, True, name) for day, name in decl.workdays)
    makeup = tuple(WorkPeriod.parse(text) for text in decl.makeup_day_hours) if decl.makeup_day_hours else None
    spec = CalendarSpec(decl.name, weekly_hours(dict(decl.hours)), decl.timezone, HolidaySource(decl.public_holidays),
                        FallbackRule(decl.uncovered_years), overrides, frozenset(decl.official_years), makeup)
    return BusinessCalendar(spec)


def counted(duration: DurationSpec, calendar: BusinessCalendar | None) -> dt.timedelta:
    """A blueprint duration as counted time ("1bd" = one ordinary working day of the calendar)."""
    day = calendar.working_day_length if calendar is not None else dt.timedelta(days=1)
    return duration.fixed + duration.business_days * day


def build_policy(spec: SlaSpec, calendar: BusinessCalendar | None) -> SlaPolicy:
    return SlaPolicy(spec.name, tuple((tier, counted(d, calendar)) for tier, d in spec.targets),
                     spec.warn_at, spec.escalate_at, spec.business_time, spec.calendar,
                     counted(spec.default_target, calendar) if spec.default_target else None)


def calendar_warnings(model: Metamodel, today: dt.date) -> list[str]:
    """Loud warnings for this year and next whose holidays a calendar only assumes (for `crm doctor`)."""
    warnings: list[str] = []
    for decl in model.calendars:
        warnings += build_calendar(decl).coverage_warnings([today.year, today.year + 1])
    return warnings


# --------------------------------------------------------------------------- the crm_clocks rows

def _pauses_json(pauses: tuple[Pause, ...]) -> list[list[str | None]]:
    return [[p.start.astimezone(_UTC).isoformat(), p.end.astimezone(_UTC).isoformat() if p.end else None]
            for p in pauses]


def _pauses(raw: Any) -> tuple[Pause, ...]:
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
    return ClockSnapshot(as_utc(row.started_at), row.state, row.tier, _pauses(row.pauses),  # type: ignore[arg-type]
                         as_utc(row.breached_at))


def save_clock(connection: sa.Connection, schema: Schema, kind: str, entity: str, record_id: int, name: str,
               clock: ClockSnapshot, now: dt.datetime, *, due_at: dt.datetime | None = None,
               reason: str = "", met: bool | None = None) -> None:
    """Write the clock's current cycle (insert the first time, else update)."""
    _clock_upsert(schema.clocks, connection.dialect.name).run(connection, {
        "kind": kind, "entity": entity, "record_id": record_id, "name": name,
        "started_at": naive(clock.started_at), "tier": clock.tier, "pauses": _pauses_json(clock.pauses),
        "state": clock.state, "due_at": naive(due_at), "breached_at": naive(clock.breached_at),
        "stopped_at": naive(now) if clock.state in ("stopped", "cancelled", "done") else None,
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

def sla_condition(runtime: Any, entity: str, table: sa.Table, which: str, now: dt.datetime,
                  policy: str | None = None) -> sa.ColumnElement[bool]:
    """A WHERE condition on `table` (the entity's table) for records whose SLA is `which`:
    "overdue", "due_within:<duration>" (e.g. due_within:1h), "paused" or "running";
    `policy` narrows it to one SLA. `runtime` may also be the runtime's Schema."""
    clocks = getattr(runtime, "schema", runtime).clocks
    base = [clocks.c.kind == "sla", clocks.c.entity == entity, clocks.c.record_id == table.c.id]
    if policy is not None:
        base.append(clocks.c.name == policy)
    moment = naive(now)
    if which == "overdue":
        condition = sa.or_(sa.and_(clocks.c.state == "running", clocks.c.due_at <= moment),
                           sa.and_(clocks.c.state.in_(("running", "paused")), clocks.c.breached_at.is_not(None)))
    elif which.startswith("due_within:"):
        window = parse_duration(which.split(":", 1)[1]).fixed
        condition = sa.and_(clocks.c.state == "running", clocks.c.due_at > moment,
                            clocks.c.due_at <= naive(now + window))
    elif which in ("paused", "running"):
        condition = clocks.c.state == which
    else:
        raise ValueError(f"unknown SLA filter '{which}'; use overdue, due_within:1h, paused or running")
    return sa.exists().where(*base, condition)


def sla_summary(runtime: Any, entity: str, record_id: int, now: dt.datetime) -> list[dict[str, Any]]:
    """Every SLA clock of one record, for the record page: state, due time, what is left or how late."""
    from engine.runtime.automation.sla import timekeeping_of

    keeper = timekeeping_of(runtime)
    table = runtime.schema.clocks
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(table).where(table.c.kind == "sla", table.c.entity == entity,
                                                         table.c.record_id == record_id)
                                  .order_by(table.c.name)).all()
    result = []
    for row in rows:
        spec = keeper.sla(row.name) if keeper is not None else None
        if spec is None or row.state == "cancelled":
            continue
        calendar = keeper.calendar(spec.calendar) if keeper is not None else None
        stopped = as_utc(row.stopped_at) if row.state == "stopped" else None
        status = sla_state(now, build_policy(spec, calendar), as_utc(row.started_at),  # type: ignore[arg-type]
                           row.tier, _pauses(row.pauses), calendar, stopped_at=stopped)
        result.append({"policy": spec.name, "label": spec.label, "tier": row.tier, "state": status.state.value,
                       "due_at": status.due_at, "remaining": status.remaining, "target": status.target,
                       "percent": round(status.percent_used), "started_at": as_utc(row.started_at),
                       "breached_at": as_utc(row.breached_at), "met": status.met, "reason": row.reason or ""})
    return result


def cadence_summary(runtime: Any, entity: str, record_id: int) -> list[dict[str, Any]]:
    """Every cadence run of one record: state, why it stopped, and each step's due time and status."""
    clocks, timers = runtime.schema.clocks, runtime.schema.timers
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(clocks).where(clocks.c.kind == "cadence", clocks.c.entity == entity,
                                                          clocks.c.record_id == record_id)
                                  .order_by(clocks.c.name)).all()
        result = []
        for row in rows:
            prefix = cadence_prefix(row.name, entity, record_id, as_utc(row.started_at))
            steps = connection.execute(sa.select(timers.c.key, timers.c.due_at, timers.c.status, timers.c.payload)
                                       .where(timers.c.key.like(prefix.replace("_", "\\_") + "%", escape="\\"))
                                       .order_by(timers.c.due_at)).all()
            result.append({"cadence": row.name, "state": row.state, "started_at": as_utc(row.started_at),
                           "stopped_at": as_utc(row.stopped_at), "reason": row.reason or "",
                           "steps": [{"step": (step.payload or {}).get("step"), "due_at": as_utc(step.due_at),
                                      "status": step.status} for step in steps]})
    return result


def cadence_prefix(name: str, entity: str, record_id: int, started_at: dt.datetime | None = None) -> str:
    """Timer-key prefix of one record's cadence runs (all, or the run that started at `started_at`)."""
    prefix = f"cadence:{name}:{entity}:{record_id}:"
    return prefix if started_at is None else f"{prefix}{started_at.astimezone(_UTC).strftime('%Y%m%dT%H%M%S.%fZ')}:"


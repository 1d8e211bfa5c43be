"""Scheduled jobs from the blueprint: count, render, send — once per scheduled moment.

Each `jobs:` entry becomes a worker `ScheduledJob`. Running it computes the declared
counts and lists (records matching field values, created or updated within a window, in
an SLA state, or events of a kind), renders the job's template with them, and writes one
outbox row keyed by job and moment — so even a job run twice would send one message.
The worker logs every run in crm_job_runs (the text it sent, or the error).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.engine import Runtime
from engine.metamodel.jobs import CountSpec, JobSpec
from engine.runtime.automation.clocks import build_calendar, naive, sla_condition
from engine.runtime.background.delivery import channel_named, enqueue_notification
from engine.runtime.background.worker import ScheduledJob


def scheduled_jobs(runtime: Runtime) -> list[ScheduledJob]:
    """A ScheduledJob per blueprint job."""
    return [ScheduledJob(spec.name, spec.cron, _runner(spec), spec.timezone) for spec in runtime.model.jobs]


def _runner(spec: JobSpec) -> Any:
    def run(runtime: Runtime, moment: dt.datetime) -> str:
        return run_job(runtime, spec, moment)
    return run


def run_job(runtime: Runtime, spec: JobSpec, moment: dt.datetime) -> str:
    """Compute the job's numbers at `moment`, enqueue its message; returns what was sent (for the run log)."""
    if spec.calendar is not None:
        decl = next(d for d in runtime.model.calendars if d.name == spec.calendar)
        local = moment.astimezone(ZoneInfo(decl.timezone)).date()
        day = build_calendar(decl).describe_day(local)
        if not day.is_working_day:
            return f"skipped: {local} is not a working day ({day.name or day.kind.value})"
    now = runtime.clock.now()
    with runtime.db.write() as connection:
        counts: dict[str, int] = {}
        lists: dict[str, list[dict[str, Any]]] = {}
        for count in spec.counts:
            if count.limit:
                lists[count.name] = _list(runtime, connection, count, moment)
            else:
                counts[count.name] = _count(runtime, connection, count, moment)
        context = {"counts": counts, "lists": lists, "now": moment, "job": {"name": spec.name,
                                                                             "label": spec.label.text("zh")}}
        key = f"job:{spec.name}:{moment.astimezone(dt.timezone.utc).isoformat()}"
        enqueue_notification(connection, runtime.schema, runtime.model, channel=spec.channel, template=spec.template,
                             to=(), owner_id=None, context=context, key=key, now=now)
        row = connection.execute(sa.select(runtime.schema.outbox.c.payload)
                                 .where(runtime.schema.outbox.c.idempotency_key == key)).scalar()
    payload = dict(row or {})
    channel = channel_named(runtime.model, spec.channel)
    head = f"{spec.channel} ({channel.type if channel else '?'}): "
    return head + str(payload.get("error") or payload.get("text", ""))


def _conditions(runtime: Runtime, count: CountSpec, moment: dt.datetime) -> tuple[sa.Table, list[Any]]:
    table = runtime.schema.table(count.entity)
    conditions: list[Any] = []
    for name, values in count.where:
        column = table.c[name]
        present = [value for value in values if value is not None]
        options = []
        if present:
            options.append(column.in_(present))
        if len(present) != len(values):
            options.append(column.is_(None))
        conditions.append(sa.or_(*options))
    if count.created_within is not None:
        conditions.append(table.c.created_at >= naive(moment - count.created_within.fixed))
    if count.updated_within is not None:
        conditions.append(table.c.updated_at >= naive(moment - count.updated_within.fixed))
    if count.sla is not None:
        conditions.append(sla_condition(runtime, count.entity, table, count.sla, moment, count.policy))
    return table, conditions


def _count(runtime: Runtime, connection: sa.Connection, count: CountSpec, moment: dt.datetime) -> int:
    if count.event is not None:
        events = runtime.schema.events
        conditions = [events.c.entity == count.entity, events.c.kind == count.event, events.c.at <= naive(moment)]
        if count.created_within is not None:
            conditions.append(events.c.at >= naive(moment - count.created_within.fixed))
        return int(connection.execute(sa.select(sa.func.count()).where(*conditions)).scalar_one())
    table, conditions = _conditions(runtime, count, moment)
    return int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*conditions)).scalar_one())


def _list(runtime: Runtime, connection: sa.Connection, count: CountSpec, moment: dt.datetime) -> list[dict[str, Any]]:
    table, conditions = _conditions(runtime, count, moment)
    entity = runtime.model.entity(count.entity)
    rows = connection.execute(sa.select(table).where(*conditions).order_by(table.c.id).limit(count.limit)).mappings()
    return [runtime.records.record_from_row(entity, row) for row in rows]

"""Scheduled jobs from the blueprint: count, render, send — once per scheduled moment.

Each `jobs:` entry becomes a worker `ScheduledJob`. Running it computes the declared
counts and lists (records matching field values, created or updated within a window, in
an SLA state, or events of a kind), renders the job's template with them, and writes one
outbox row keyed by job and moment — so even a job run twice would send one message.
The worker logs every run in crm_job_runs (the text it sent, or the error).

A score declared `recompute: [on_change, nightly]` (engine/metamodel/scores.py) is a job too,
named `score:<name>`, at its `nightly_at` in the app's time zone: the same crm_job_runs key makes
it run once per night across all workers. It rescores the entity's records in batches of
`nightly_batch`, one transaction each, so a long pass never holds one huge transaction and
a failed batch leaves the ones before it written.
"""

from __future__ import annotations

import datetime as dt
import functools
import statistics
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.metamodel.jobs import CountSpec, JobSpec
from engine.metamodel.model import Metamodel
from engine.metamodel.scores import ScoreSpec
from engine.rules.calendars import BusinessCalendar
from engine.rules.time import Clock
from engine.runtime.automation.clocks import naive, sla_condition
from engine.runtime.automation.notify import enqueue_notification
from engine.runtime.automation.scores import ScoreKeeper
from engine.runtime.background.worker import ScheduledJob
from engine.runtime.records.errors import VersionConflict
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema


class Jobs:
    """The blueprint's scheduled jobs, as worker ScheduledJobs."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, clock: Clock, records: RecordService,
                 calendars: Mapping[str, BusinessCalendar], base_url: str = "",
                 scores: ScoreKeeper | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.scores = scores
        self.model = model
        self.schema = schema
        self.db = db
        self.clock = clock
        self.records = records
        self.calendars = calendars

    def scheduled_jobs(self) -> list[ScheduledJob]:
        """A ScheduledJob per blueprint job, and one per score recomputed nightly."""
        jobs = [ScheduledJob(spec.name, spec.cron, functools.partial(self.run_job, spec), spec.timezone)
                for spec in self.model.jobs]
        if self.scores is not None:
            jobs += [ScheduledJob(f"score:{spec.name}", spec.nightly_cron, functools.partial(self.run_score_pass, spec),
                                  self.model.settings.timezone)
                     for spec in self.model.scores if spec.is_nightly]
        return jobs

    def run_score_pass(self, spec: ScoreSpec, moment: dt.datetime) -> str:
        """Rescore every record of the score's entity, a batch per transaction; returns the tally for the run log."""
        assert self.scores is not None
        read = changed = 0
        after: int | None = 0
        while after is not None:
            count, moved, after = self._rescore_batch(spec, after)
            read, changed = read + count, changed + moved
        return f"{spec.name}: {read} {spec.entity} records rescored, {changed} changed"

    def run_job(self, spec: JobSpec, moment: dt.datetime) -> str:
        """Compute the job's numbers at `moment`, enqueue its message; returns what was sent (for the run log)."""
        if spec.calendar is not None:
            local = moment.astimezone(ZoneInfo(self.model.calendar(spec.calendar).timezone)).date()
            day = self.calendars[spec.calendar].describe_day(local)
            if not day.is_working_day:
                return f"skipped: {local} is not a working day ({day.name or day.kind.value})"
        now = self.clock.now()
        if spec.per:
            return self._run_per_person(spec, moment, now)
        with self.db.write() as connection:
            counts: dict[str, int] = {}
            lists: dict[str, list[dict[str, Any]]] = {}
            for count in spec.counts:
                if count.limit:
                    lists[count.name] = self._list(connection, count, moment)
                else:
                    counts[count.name] = self._count(connection, count, moment)
            context = {"counts": counts, "lists": lists, "now": moment, "job": {"name": spec.name,
                                                                                 "label": spec.label.text("zh")}}
            key = f"job:{spec.name}:{moment.astimezone(dt.timezone.utc).isoformat()}"
            enqueue_notification(connection, self.schema, self.model, channel=spec.channel, to=(), owner_id=None,
                                 context=context, key=key, now=now, template=spec.template)
            row = connection.execute(sa.select(self.schema.outbox.c.payload)
                                     .where(self.schema.outbox.c.idempotency_key == key)).scalar()
        payload = dict(row or {})
        kind = self.model.channel(spec.channel).type if self.model.has_channel(spec.channel) else "?"
        head = f"{spec.channel} ({kind}): "
        return head + str(payload.get("error") or payload.get("text", ""))

    def _rescore_batch(self, spec: ScoreSpec, after: int, attempts: int = 5) -> tuple[int, int, int | None]:
        """One batch in one transaction. A record of the batch written meanwhile by someone else (a
        timer of another worker closing a ticket rescores its account too) rolls the batch back:
        it is read and computed again, from the newer values."""
        assert self.scores is not None
        for attempt in range(attempts):
            try:
                with self.db.write() as connection:
                    return self.scores.rescore_batch(connection, spec, after, spec.nightly_batch)
            except VersionConflict:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _run_per_person(self, spec: JobSpec, moment: dt.datetime, now: dt.datetime) -> str:
        """One message per active user of the job's roles: their own counts and lists, their
        team's median of each count (over the same roles), and the count furthest from it."""
        users = self.schema.users
        sent = []
        with self.db.write() as connection:
            people = connection.execute(sa.select(users).where(users.c.role.in_(spec.per), users.c.is_active)
                                        .order_by(users.c.id)).all()
            numbers = [c for c in spec.counts if not c.limit]
            own = {person.id: {c.name: self._count(connection, c, moment, person.id) for c in numbers}
                   for person in people}
            link = f"{self.base_url}/dashboards/{spec.dashboard}" if spec.dashboard else ""
            for person in people:
                mates = [other.id for other in people if other.team == person.team] or [person.id]
                median = {c.name: statistics.median(own[mate][c.name] for mate in mates) for c in numbers}
                mine = own[person.id]
                gap = max(numbers, key=lambda c: (abs(mine[c.name] - median[c.name]) / max(median[c.name], 1),
                                                  c.name), default=None)
                lists = {c.name: self._list(connection, c, moment, person.id) for c in spec.counts if c.limit}
                context = {"counts": mine, "lists": lists, "team_median": median, "now": moment, "link": link,
                           "gap": {"name": gap.name, "value": mine[gap.name], "median": median[gap.name]}
                           if gap is not None else None,
                           "person": {"name": person.display_name or person.username, "username": person.username,
                                      "team": person.team},
                           "job": {"name": spec.name, "label": spec.label.text("zh")}}
                key = f"job:{spec.name}:{moment.astimezone(dt.timezone.utc).isoformat()}:{person.id}"
                enqueue_notification(connection, self.schema, self.model, channel=spec.channel, to=("owner",),
                                     owner_id=person.id, context=context, key=key, now=now, template=spec.template)
                sent.append(person.username)
        return f"{spec.channel}: one message each to {', '.join(sent) or 'nobody'}"

    def _conditions(self, count: CountSpec, moment: dt.datetime,
                    owner: int | None = None) -> tuple[sa.Table, list[Any]]:
        table = self.schema.table(count.entity)
        conditions: list[Any] = [] if owner is None else [table.c.owner == owner]
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
            conditions.append(sla_condition(self.schema, count.entity, table, count.sla, moment, count.policy))
        return table, conditions

    def _count(self, connection: sa.Connection, count: CountSpec, moment: dt.datetime, owner: int | None = None) -> int:
        if count.event is not None:
            events = self.schema.events
            conditions = [events.c.entity == count.entity, events.c.kind == count.event, events.c.at <= naive(moment)]
            if owner is not None:  # events of the records the person owns
                table = self.schema.table(count.entity)
                conditions.append(events.c.record_id.in_(sa.select(table.c.id).where(table.c.owner == owner)))
            if count.created_within is not None:
                conditions.append(events.c.at >= naive(moment - count.created_within.fixed))
            return int(connection.execute(sa.select(sa.func.count()).where(*conditions)).scalar_one())
        table, conditions = self._conditions(count, moment, owner)
        return int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*conditions)).scalar_one())

    def _list(self, connection: sa.Connection, count: CountSpec, moment: dt.datetime,
              owner: int | None = None) -> list[dict[str, Any]]:
        table, conditions = self._conditions(count, moment, owner)
        entity = self.model.entity(count.entity)
        rows = connection.execute(sa.select(table).where(*conditions).order_by(table.c.id).limit(count.limit)).mappings()
        return [self.records.record_from_row(entity, row) for row in rows]



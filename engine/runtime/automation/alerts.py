"""Windowed alerts applied inside the write (engine/metamodel/alerts.py: "5 tickets with the same
fault code and region within 3 days raise one quality alert").

`AlertWindows.before_write` runs for every write of an entity some alert counts. For a record
that counts (its group fields filled, its `where` met, not yet in an alert) it takes the group's
lock (PostgreSQL: a transaction advisory lock on the group; SQLite writes one at a time), then:

- an open alert of the group (its record meets `open_while`) → the record joins it: its link is
  set in the same write, the alert's member count goes up;
- else one indexed count of the group's records created within the window and not yet in an
  alert (an index range scan on group fields + created_at, declared by the entity) — when this
  record makes it reach the threshold, the alert record is created, every counted record is
  linked to it, and `on_raised` runs on it through the one ActionExecutor.

Everything is in the database (the records, their links, crm_alerts), so a restart changes
nothing, and two concurrent writers of the same group are serialised by the lock: the second
sees the first's alert and joins it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.metamodel.alerts import AlertSpec
from engine.rules.actions import compute_value
from engine.rules.alerts import AlertStep, affects, decide, group_key, group_values, lock_key, meets_where
from engine.rules.expressions import Evaluator
from engine.rules.rules import Change, Origin, evaluate_condition
from engine.runtime.automation.actions import ActionExecutor
from engine.runtime.records.actors import Actor
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.times import naive_utc
from engine.runtime.storage.tables import Schema

ALERT_ACTOR = Actor(None, "alert", role="system", is_system=True)


class AlertWindows:
    """The write observer of the `alerts:` documents."""

    def __init__(self, model: Metamodel, schema: Schema, records: RecordService, evaluator: Evaluator,
                 executor: ActionExecutor) -> None:
        self.model = model
        self.schema = schema
        self.records = records
        self.evaluator = evaluator
        self.executor = executor
        self._by_entity: dict[str, tuple[AlertSpec, ...]] = {}
        self._statements: dict[str, tuple[Prepared, Prepared]] = {}  # per alert: state look-up, window count
        for spec in model.alerts:
            self._by_entity[spec.entity] = (*self._by_entity.get(spec.entity, ()), spec)

    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        specs = self._by_entity.get(context.entity.name)
        if not specs or context.change not in (Change.CREATED, Change.UPDATED):
            return {}
        changes: dict[str, Any] = {}
        for spec in specs:
            values = context.after
            if values.get(spec.link) is not None or not affects(spec, context.before, values):
                continue
            group = group_values(spec, values)
            if group is None or not meets_where(spec, values):
                continue
            alert_id = self._count_in(context, spec, group)
            if alert_id is not None:
                changes[spec.link] = alert_id
        return changes

    def after_write(self, context: WriteContext) -> None:
        return None

    # -- one record in one group ------------------------------------------------------------------
    def _count_in(self, context: WriteContext, spec: AlertSpec, group: tuple[Any, ...]) -> int | None:
        connection, now = context.connection, context.now
        key = group_key(group)
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(spec, key)})
        state = self.schema.alerts
        lookup, count = self._prepared(spec)
        current = lookup.first(connection, {"alert": spec.name, "group_key": key})
        open_alert = current is not None and self._is_open(connection, spec, int(current.record_id))
        own = context.after.get("id") if context.before is not None else None
        counted = 0 if open_alert else int(count.scalar(connection, {
            **{f"g{index}": value for index, value in enumerate(group)},
            "since": naive_utc(now - spec.window.fixed), "own": own or 0})) + 1
        step = decide(spec, open_alert=open_alert, counted=counted)
        if step is AlertStep.NOTHING:
            return None
        if step is AlertStep.JOIN:
            assert current is not None
            alert_id, members = int(current.record_id), int(current.members) + 1
            connection.execute(sa.update(state).where(state.c.alert == spec.name, state.c.group_key == key,
                                                      state.c.record_id == alert_id)
                               .values(members=members, last_at=naive_utc(now)))
            if spec.count_field is not None:
                self.records.update(spec.alert_entity, alert_id, {spec.count_field: members}, actor=ALERT_ACTOR,
                                    within=connection, origin=Origin.RULE.value)
            return alert_id
        return self._raise(context, spec, group, key, counted, own)

    def _prepared(self, spec: AlertSpec) -> tuple[Prepared, Prepared]:
        """The group's latest alert and the window's indexed count, compiled once per alert."""
        cached = self._statements.get(spec.name)
        if cached is None:
            state = self.schema.alerts
            lookup = Prepared(sa.select(state.c.record_id, state.c.members)
                              .where(state.c.alert == sa.bindparam("alert"), state.c.group_key == sa.bindparam("group_key"))
                              .order_by(state.c.raised_at.desc(), state.c.record_id.desc()).limit(1))
            table = self.schema.table(spec.entity)
            clauses = [table.c[name] == sa.bindparam(f"g{index}") for index, name in enumerate(spec.group_by)]
            clauses += [table.c.created_at >= sa.bindparam("since"), table.c[spec.link].is_(None),
                        table.c.id != sa.bindparam("own"), *self._where(spec, table)]
            count = Prepared(sa.select(sa.func.count()).select_from(table).where(*clauses))
            cached = self._statements[spec.name] = (lookup, count)
        return cached

    @staticmethod
    def _where(spec: AlertSpec, table: sa.Table) -> list[Any]:
        clauses = []
        for name, allowed in spec.where:
            present = [value for value in allowed if value is not None]
            clause = table.c[name].in_(present) if present else sa.false()
            clauses.append(sa.or_(clause, table.c[name].is_(None)) if None in allowed else clause)
        return clauses

    def _is_open(self, connection: sa.Connection, spec: AlertSpec, alert_id: int) -> bool:
        record = self.records.find(connection, spec.alert_entity, alert_id)
        if record is None:
            return False
        if spec.open_while is None:
            return True
        values = expression_values(self.model.entity(spec.alert_entity), record)
        return evaluate_condition(spec.open_while, values, self.evaluator).is_true

    def _members_query(self, spec: AlertSpec, group: tuple[Any, ...], now: dt.datetime,
                       own: int | None) -> Any:
        table = self.schema.table(spec.entity)
        clauses = [table.c[name] == value for name, value in zip(spec.group_by, group)]
        clauses.append(table.c.created_at >= naive_utc(now - spec.window.fixed))
        clauses.append(table.c[spec.link].is_(None))
        clauses.extend(self._where(spec, table))
        if own is not None:
            clauses.append(table.c.id != own)
        return table, sa.and_(*clauses)

    def _raise(self, context: WriteContext, spec: AlertSpec, group: tuple[Any, ...], key: str, counted: int,
               own: int | None) -> int:
        connection, now = context.connection, context.now
        entity = self.model.entity(spec.entity)
        source = expression_values(entity, context.after)
        values = {name: compute_value(value, source, self.evaluator) for name, value in spec.values}
        if spec.count_field is not None:
            values[spec.count_field] = counted
        alert = self.records.create(spec.alert_entity, values, actor=ALERT_ACTOR, within=connection,
                                    origin=Origin.RULE.value).record
        table, where = self._members_query(spec, group, now, own)
        for row in connection.execute(sa.select(table.c.id).where(where).order_by(table.c.id)).all():
            self.records.update(spec.entity, int(row.id), {spec.link: alert["id"]}, actor=ALERT_ACTOR,
                                within=connection, origin=Origin.RULE.value)
        connection.execute(sa.insert(self.schema.alerts).values(
            alert=spec.name, group_key=key, record_id=alert["id"], raised_at=naive_utc(now), last_at=naive_utc(now),
            members=counted))
        if spec.on_raised:
            self.executor.run(connection, spec.alert_entity, dict(alert), spec.on_raised, now,
                              key=f"alert:{spec.name}:{alert['id']}",
                              context={"alert": {"name": spec.name, "label": spec.label.text("zh"), "count": counted,
                                                 "window": spec.window.text,
                                                 "group": dict(zip(spec.group_by, group))}})
        return int(alert["id"])

"""The event log: one row per change, written in the same transaction as the change.

It is the audit trail (who, when, before → after per field) and the record timeline, and
the source every process metric is later computed from.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec
from engine.runtime.storage.times import as_utc
from engine.runtime.records.fieldkinds import FieldKinds
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc


class EventKind(enum.StrEnum):
    """The catalogue: every kind of row the event log holds (analytics and timelines read these)."""

    CREATED = "created"                    # a record was created (changes: every field set)
    UPDATED = "updated"                    # fields changed (changes: before → after)
    DELETED = "deleted"                    # a record was deleted (changes: every field it had)
    CONVERTED = "converted"                # a conversion (data: into {step: entity, id, matched} on the converted
    #                                        record; from {entity, id} on each record it became)
    TRANSITIONED = "transitioned"          # a stage move through …/transition (data: field, from, to)
    STAGE_CHANGED = "stage_changed"        # a funnel stage was entered, by any write (data: funnel, field, from,
                                           # to, move, return, evidence, dwell_seconds in `from`; history: imported)
    ASSIGNED = "assigned"                  # the owner changed, by anyone or anything (changes: owner)
    VIEWED = "viewed"                      # the owner opened the record and an SLA watched for it
    MERGED = "merged"                      # an intake/import duplicate updated this record instead
    DUPLICATE_FLAGGED = "duplicate_flagged"  # created, but marked as a probable duplicate of another
    INTAKE_FLAGGED = "intake_flagged"      # caught by a source's test or spam filter: not routed
    ROUTING_QUEUED = "routing_queued"      # nobody could take it: parked in the fallback queue
    ROUTING_UNASSIGNED = "routing_unassigned"  # nobody could take it and there is no queue
    REASSIGN_SKIPPED = "reassign_skipped"  # a (re)assign action found nobody to give it to
    REROUTED = "rerouted"                  # routed again by `crm route` / the unassigned list (data: reason, by,
                                           # policy, outcome, to/username when someone took it)
    ACTION_FAILED = "action_failed"        # a timer's action was refused (data: action, error)
    SLA_START = "sla_start"                # an SLA clock started (data: policy, due_at)
    SLA_RESTART = "sla_restart"
    SLA_PAUSE = "sla_pause"
    SLA_RESUME = "sla_resume"
    SLA_RETIER = "sla_retier"
    SLA_STOP = "sla_stop"                  # stopped by a stop condition (data: met)
    SLA_CANCEL = "sla_cancel"
    SLA_WARNING = "sla_warning"            # a warning checkpoint fired
    SLA_BREACHED = "sla_breached"          # the target passed without the stop condition
    SLA_ESCALATED = "sla_escalated"        # an escalation checkpoint after the breach fired
    CADENCE_START = "cadence_start"
    CADENCE_RESTART = "cadence_restart"
    CADENCE_STOP = "cadence_stop"
    CADENCE_CANCEL = "cadence_cancel"
    CADENCE_STEP = "cadence_step"          # a cadence step ran (data: cadence, step)
    APPROVAL_REQUESTED = "approval_requested"  # on the record: an approval was asked for (data: approval, request)
    APPROVAL_DECIDED = "approval_decided"      # on the record: it was granted or refused (data: approval, status)
    APPROVAL_STEP = "approval_step"            # on the request: a step started, with its approvers (data: step, to)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    entity: str
    record_id: int
    kind: str
    actor_id: int | None
    at: dt.datetime
    changes: dict[str, list[Any]]
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "entity": self.entity, "record_id": self.record_id, "kind": self.kind,
                "actor_id": self.actor_id, "at": self.at.isoformat(), "changes": self.changes, "data": self.data}


SYSTEM_JSON: dict[str, Callable[[Any], Any]] = {
    "created_at": lambda v: v.isoformat(),
    "updated_at": lambda v: v.isoformat(),
}


def value_json(entity: EntitySpec, name: str, value: Any, kinds: FieldKinds) -> Any:
    """The JSON form of one field's value (system fields included)."""
    if value is None:
        return None
    to_json = SYSTEM_JSON.get(name) or kinds.json_converters(entity).get(name)
    return value if to_json is None else to_json(value)


def diff(entity: EntitySpec, kinds: FieldKinds, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
         names: Any = None) -> dict[str, list[Any]]:
    """{field: [before, after]} in JSON form, for fields whose value differs."""
    if not before and names is None and after:  # a creation: its non-empty fields
        return creation_diff(entity, kinds)(after)
    before = before or {}
    after = after or {}
    converters = kinds.json_converters(entity)
    changes = {}
    for name in (names if names is not None else (*entity.field_names(), "owner")):
        old, new = before.get(name), after.get(name)
        if old != new:
            to_json = SYSTEM_JSON.get(name) or converters.get(name)
            changes[name] = [old if to_json is None or old is None else to_json(old),
                             new if to_json is None or new is None else to_json(new)]
    return changes


def creation_diff(entity: EntitySpec, kinds: FieldKinds) -> Callable[[Mapping[str, Any]], dict[str, list[Any]]]:
    """`diff(entity, kinds, None, record)` for new records of one entity, its converters looked up
    once (an import writes thousands of records; every create writes one)."""
    fields = (*kinds.json_fields(entity), ("owner", None))

    def changes(record: Mapping[str, Any]) -> dict[str, list[Any]]:
        found = {}
        for name, to_json in fields:
            value = record.get(name)
            if value is not None:
                found[name] = [None, value if to_json is None else to_json(value)]
        return found
    return changes


def append_event(connection: sa.Connection, schema: Schema, *, entity: str, record_id: int, kind: EventKind,
                 actor_id: int | None, at: dt.datetime, changes: Mapping[str, Any] | None = None,
                 data: Mapping[str, Any] | None = None) -> None:
    """One event row in the caller's transaction (held back while the caller defers writes)."""
    _insert(schema.events).run_later(connection, {
        "entity": entity, "record_id": record_id, "kind": kind, "actor_id": actor_id,
        "at": naive_utc(at),
        "changes": dict(changes or {}), "data": dict(data or {})})


@functools.lru_cache(maxsize=16)
def _insert(table: sa.Table) -> Prepared:
    return Prepared(table.insert(), columns=("entity", "record_id", "kind", "actor_id", "at", "changes", "data"))


def read_events(connection: sa.Connection, schema: Schema, entity: str, record_id: int) -> list[Event]:
    table = schema.events
    rows = connection.execute(sa.select(table).where(table.c.entity == entity, table.c.record_id == record_id)
                              .order_by(table.c.id))
    return [Event(row.id, row.entity, row.record_id, row.kind, row.actor_id, as_utc(row.at) or row.at,
                  row.changes or {}, row.data or {}) for row in rows]

"""The event log: one row per change, written in the same transaction as the change.

It is the audit trail (who, when, before → after per field) and the record timeline, and
the source every process metric is later computed from.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec
from engine.runtime.records.fieldkinds import as_utc, kind_of
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema


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


SYSTEM_JSON = {
    "created_at": lambda v: None if v is None else v.isoformat(),
    "updated_at": lambda v: None if v is None else v.isoformat(),
}


def value_json(entity: EntitySpec, name: str, value: Any) -> Any:
    """The JSON form of one field's value (system fields included)."""
    if value is None:
        return None
    if name in SYSTEM_JSON:
        return SYSTEM_JSON[name](value)
    if entity.has_field(name):
        spec = entity.field(name)
        return kind_of(spec).to_json(spec, value)
    return value


def diff(entity: EntitySpec, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
         names: Any = None) -> dict[str, list[Any]]:
    """{field: [before, after]} in JSON form, for fields whose value differs."""
    before = before or {}
    after = after or {}
    keys = names if names is not None else [*entity.field_names(), "owner"]
    changes = {}
    for name in keys:
        old, new = before.get(name), after.get(name)
        if old != new:
            changes[name] = [value_json(entity, name, old), value_json(entity, name, new)]
    return changes


def append_event(connection: sa.Connection, schema: Schema, *, entity: str, record_id: int, kind: str,
                 actor_id: int | None, at: dt.datetime, changes: Mapping[str, Any] | None = None,
                 data: Mapping[str, Any] | None = None) -> None:
    """One event row in the caller's transaction (held back while the caller defers writes)."""
    _insert(schema.events).run_later(connection, {
        "entity": entity, "record_id": record_id, "kind": kind, "actor_id": actor_id,
        "at": at.astimezone(dt.timezone.utc).replace(tzinfo=None),
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

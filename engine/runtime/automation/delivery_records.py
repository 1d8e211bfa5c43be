"""The records one delivery makes and links: the source's `records:` (a guardian before the student,
the account and contact behind a lead) and links given by a natural key (`lookup:` — a campus by
name, a product by code, an account by name).

Everything here runs inside the delivery's transaction and writes only through RecordService, so
each record gets its validation, dedup, rules and events; the caller wraps it all in one savepoint,
so a record refused anywhere leaves none of the others behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel.entities import EntitySpec
from engine.metamodel.sources import FieldMapping, LinkedRecordSpec, SourceSpec
from engine.rules.rules import evaluate_condition
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import DuplicateRecord, RecordError, ValidationFailed
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.records.lookups import find_by_key
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import coerce_input, expression_values


@dataclass(frozen=True, slots=True)
class MadeRecord:
    """One record a delivery made or linked, as the delivery log and the answer name it."""

    name: str     # the record's name under the source's records:, or the source's entity for its own
    entity: str
    id: int
    outcome: str  # created, merged, flagged, or linked (an existing record matched)

    def as_dict(self) -> dict[str, Any]:
        return {"record": self.name, "entity": self.entity, "id": self.id, "outcome": self.outcome}


class RecordRefused(Exception):
    """A record of the delivery was refused: which one, and why (the RecordService error)."""

    def __init__(self, name: str, entity: str, error: RecordError) -> None:
        super().__init__(f"{name}: {error.message}")
        self.name = name
        self.entity = entity
        self.error = error


class DeliveryRecords:
    """Makes the further records of a delivery and resolves every mapping's links."""

    def __init__(self, records: RecordService) -> None:
        self.records = records
        self.schema = records.schema
        self.model = records.model

    def make_linked(self, connection: sa.Connection, source: SourceSpec, payload: Any,
                    actor: Actor) -> dict[str, MadeRecord]:
        """The source's `records:`, in order; those whose `when` path is empty are skipped."""
        made: dict[str, MadeRecord] = {}
        for spec in source.records:
            if not spec.applies_to(payload):
                continue
            try:
                values = spec.map_payload(payload)
                self.resolve_links(connection, self.model.entity(spec.entity), spec.mapping, payload, values, made)
                made[spec.name] = self._make(connection, source, spec, values, actor)
            except RecordError as error:
                raise RecordRefused(spec.name, spec.entity, error) from None
        return made

    def is_filtered(self, source: SourceSpec, values: Mapping[str, Any]) -> bool:
        """Whether the source's test or spam filter catches its own record (read from the mapped
        values): then no further records are made — test data files no account — while the record
        itself is kept and flagged, as always."""
        filters = [expression for expression in (source.test_filter, source.spam_filter) if expression is not None]
        if not source.records or not filters:
            return False
        entity = self.model.entity(source.entity)
        resolved_later = {item.field for item in source.mapping if item.lookup is not None or item.record is not None}
        data, problems = coerce_input(entity, {name: value for name, value in values.items()
                                               if name not in resolved_later}, kinds=self.schema.kinds)
        if problems:
            return False  # the record itself is refused, with its reasons
        view = expression_values(entity, data)
        return any(evaluate_condition(expression, view, self.records.evaluator).is_true for expression in filters)

    def resolve_links(self, connection: sa.Connection, entity: EntitySpec, mapping: tuple[FieldMapping, ...],
                      payload: Any, values: dict[str, Any], made: Mapping[str, MadeRecord]) -> None:
        """Put record ids into `values` for the links given as `record:` (a record of this delivery;
        left out when it was skipped) or as `lookup:` (the one target record whose field holds the
        payload's value). ValidationFailed names each field whose value matched no record or several."""
        errors: list[FieldError] = []
        for item in mapping:
            if item.record is not None:
                if item.record in made:
                    values[item.field] = made[item.record].id
                continue
            if item.lookup is None or values.get(item.field) is None:
                continue
            try:
                values[item.field] = self._look_up(connection, entity, item, values[item.field])
            except FieldError as error:
                errors.append(error)
                values.pop(item.field)
        if errors:
            raise ValidationFailed(errors)

    def _look_up(self, connection: sa.Connection, entity: EntitySpec, item: FieldMapping, raw: Any) -> int:
        link = entity.field(item.field)
        assert link.link_entity is not None and item.lookup is not None  # checked when the blueprint loaded
        return find_by_key(connection, self.schema, item.field, self.model.entity(link.link_entity), item.lookup, raw)

    def _make(self, connection: sa.Connection, source: SourceSpec, spec: LinkedRecordSpec,
              values: dict[str, Any], actor: Actor) -> MadeRecord:
        """Link the record whose `match_on` values equal these, else create one through RecordService
        (whose dedup may merge it into a duplicate, or refuse it and name the existing record)."""
        entity = self.model.entity(spec.entity)
        existing = self._matching(connection, entity, spec.match_on, values)
        if existing is not None:
            return MadeRecord(spec.name, entity.name, existing, "linked")
        try:
            result = self.records.create(entity.name, values, actor=actor, within=connection, origin="webhook",
                                         source=source.name)
        except DuplicateRecord as duplicate:  # dedup on_match: reject — the existing record is the one to link
            existing_id = duplicate.details.get("existing_id")
            if not isinstance(existing_id, int):
                raise
            return MadeRecord(spec.name, entity.name, existing_id, "linked")
        return MadeRecord(spec.name, entity.name, int(result.record["id"]), result.outcome)

    def _matching(self, connection: sa.Connection, entity: EntitySpec, match_on: tuple[str, ...],
                  values: Mapping[str, Any]) -> int | None:
        """The oldest record with these `match_on` values, or None (also when any of them is empty).
        On PostgreSQL the values are locked first, so two deliveries from one company make one account."""
        if not match_on:
            return None
        data, problems = coerce_input(entity, {name: values.get(name) for name in match_on}, kinds=self.schema.kinds)
        if problems or any(data.get(name) in (None, "") for name in match_on):
            return None  # RecordService reports a bad value when it creates the record
        if connection.dialect.name == "postgresql":
            text = f"{entity.name}|" + "|".join(f"{name}={data[name]}" for name in match_on)
            lock_id = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        table = self.schema.table(entity.name)
        conditions = [table.c[column] == value for name in match_on
                      for column, value in self.schema.kinds.of_field(entity.field(name))
                      .to_row(entity.field(name), data[name]).items()]
        found = connection.execute(sa.select(table.c.id).where(*conditions).order_by(table.c.id).limit(1)).scalar()
        return int(found) if found is not None else None


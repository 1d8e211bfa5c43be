"""Creating many records in one transaction with the semantics of `RecordService.create`.

An import writes thousands of rows; one `create` per row spends most of its time on statements
that can be shared. `create_batch` runs the same steps — coerce and validate, references,
dedup, the observers' `before_write` (rules, routing), the gates (funnel stages), the row, its
`created` event, the observers' `after_write` — but asks the database set-wise:

- references (owners, links) are checked with one `IN` query per target;
- dedup looks up each single-field key once for the whole batch (an indexed `IN`), and finds
  duplicates inside the batch in memory;
- the new rows go in with one executemany (RETURNING their ids in order), their events with
  another (held back by `deferring` and flushed together);
- on PostgreSQL the dedup keys are locked with one statement, not one per row.

A row that matches an existing record (or an earlier row of the batch) is merged through
`create` itself, in a savepoint, after the new rows are written, so merges follow exactly the
path every other door takes. A row that fails is rejected with its reasons and the others go
on; should anything fail after the rows were inserted (an observer's effect), the batch's new
rows are rolled back to a savepoint and written one by one through `create` instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError, ValidationFailed
from engine.runtime.records.events import EventKind, append_event, creation_diff
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.values import (apply_defaults, check_required, check_validations, coerce_input,
                                           compute_fields, link_filter_error, references)
from engine.runtime.storage.database import savepoint
from engine.runtime.storage.prepared import deferring
from engine.runtime.storage.times import as_utc, naive_utc
from engine.rules.rules import Change, Origin

if TYPE_CHECKING:
    from engine.runtime.records.service import RecordService


def past_creation(values: Mapping[str, Any], now: dt.datetime
                  ) -> tuple[Mapping[str, Any], dt.datetime | None, list[FieldError]]:
    """A history row's own creation moment (`created_at`, an instant) taken out of its values,
    or the error when it is later than `now` — the import's write and its health report alike."""
    moment = values.get("created_at")
    if moment is None:
        return values, None, []
    rest = {name: value for name, value in values.items() if name != "created_at"}
    if moment > now:
        return rest, None, [FieldError("created_at", "date_in_future", f"created_at: {moment:%Y-%m-%d %H:%M} UTC is "
                                       "later than now", "创建时间晚于现在")]
    return rest, moment, []


@dataclass(slots=True)
class RowResult:
    """What became of one row: created, merged, flagged (kept, marked as a duplicate) or rejected."""

    index: int
    outcome: str
    record_id: int | None = None
    owner: int | None = None
    errors: list[FieldError] = field(default_factory=list)

    def reason(self, lang: str = "zh") -> str:
        parts = []
        for error in self.errors:
            text = error.zh if lang == "zh" and error.zh else error.message
            parts.append(text if (lang != "zh" or not error.field or text.startswith(error.field))
                         else f"{error.field}: {text}")
        return "; ".join(parts)


def errors_of(error: RecordError) -> list[FieldError]:
    if isinstance(error, ValidationFailed):
        return list(error.errors)
    return [FieldError(error.field, type(error).__name__, str(error))]


class BatchWriter:
    """`RecordService.create` for many rows at once; see the module's docstring."""

    def __init__(self, service: RecordService) -> None:
        self.service = service

    def create_batch(self, entity_name: str, rows: Sequence[Mapping[str, Any]], *, actor: Actor,
                     connection: sa.Connection, origin: Origin = Origin.IMPORT,
                     history: bool = False) -> list[RowResult]:
        service = self.service
        entity = service.entity(entity_name)
        service._check_not_managed(entity, actor)
        service.access.require(actor, entity.name, "create")
        results = [RowResult(index, "pending") for index in range(len(rows))]
        prepared: list[tuple[int, dict[str, Any], set[str]]] = []
        owner = service.owner_on_create(entity, actor)  # for rows that name none; the same for every row
        rows, created = self._past_creations(rows, results, history)
        for index, values in enumerate(rows):
            if results[index].outcome == "rejected":
                continue
            try:
                service.access.check_writable(actor, entity.name, [name for name in values if name != "owner"])
            except RecordError as error:
                self._reject(results[index], errors_of(error))
                continue
            data, errors = coerce_input(entity, values, kinds=service.schema.kinds)
            provided = set(data)
            errors += apply_defaults(entity, data, service.evaluator, kinds=service.schema.kinds)
            errors += compute_fields(entity, data, service.evaluator, kinds=service.schema.kinds)
            errors += check_required(entity, data, already_wrong=errors)
            if not errors:
                errors += check_validations(entity, data, service.evaluator)
            if errors:
                self._reject(results[index], errors)
                continue
            if "owner" not in data and owner is not None:
                data["owner"] = owner
            prepared.append((index, data, provided))
        with deferring(connection):
            prepared = self._check_references(connection, entity, prepared, results, actor)
            fresh, again = self._split_duplicates(connection, entity, prepared)
            self._lock_keys(connection, entity, [data for _, data, _ in fresh])
            self._write_fresh(connection, entity, rows, fresh, results, actor, origin, history, created)
            for index, values_index in again:
                self._create_one(connection, entity, rows[values_index], results[index], actor, origin, history,
                                 created.get(values_index))
        return results

    def _past_creations(self, rows: Sequence[Mapping[str, Any]], results: list[RowResult], history: bool
                        ) -> tuple[list[Mapping[str, Any]], dict[int, dt.datetime]]:
        """A history import's rows may say when each record was first entered (its mapping's
        created_at column): taken out of the values, by row; one later than now is refused."""
        if not history:
            return list(rows), {}
        now = self.service.clock.now()
        kept: list[Mapping[str, Any]] = []
        created: dict[int, dt.datetime] = {}
        for index, values in enumerate(rows):
            values, moment, errors = past_creation(values, now)
            if errors:
                self._reject(results[index], errors)
            elif moment is not None:
                created[index] = moment
            kept.append(values)
        return kept, created

    @staticmethod
    def _reject(result: RowResult, errors: list[FieldError]) -> None:
        result.outcome = "rejected"
        result.errors = errors

    # -- set-wise checks -------------------------------------------------------------------

    def _check_references(self, connection: sa.Connection, entity: EntitySpec,
                          prepared: list[tuple[int, dict[str, Any], set[str]]], results: list[RowResult],
                          actor: Actor) -> list[tuple[int, dict[str, Any], set[str]]]:
        service = self.service
        wanted: dict[str, set[int]] = {}
        for _, data, _ in prepared:
            for _, target, record_id in references(entity, data):
                wanted.setdefault(target, set()).add(record_id)
        known: dict[str, dict[int, bool]] = {}
        for target, ids in wanted.items():
            if target == "user":
                users = service.schema.users
                rows = connection.execute(sa.select(users.c.id, users.c.is_active).where(users.c.id.in_(sorted(ids))))
                known[target] = {row.id: bool(row.is_active) for row in rows}
            else:
                table = service.schema.files if target == "file" else service.schema.table(target)
                rows = connection.execute(sa.select(table.c.id).where(table.c.id.in_(sorted(ids))))
                known[target] = {row.id: True for row in rows}
        parents = self._link_parents(connection, entity, prepared) if not actor.is_system else {}
        kept = []
        for index, data, provided in prepared:
            errors = []
            for spec, target, record_id in references(entity, data):
                name = spec.name if spec else "owner"
                state = known.get(target, {}).get(record_id)
                if state is None:
                    what = "user" if target == "user" else target
                    errors.append(FieldError(name, "unknown_reference", f"{name}: there is no {what} {record_id}",
                                             f"所选记录（{record_id}）不存在，可能已被删除"))
                elif not state:
                    errors.append(FieldError(name, "inactive_user", f"{name}: user {record_id} is disabled",
                                             "该用户已停用，请选择其他人"))
            for name, held in parents.items():  # `filter_by`: the chosen contact belongs to the chosen account
                spec = entity.field(name)
                chosen, parent = data.get(name), data.get(str(spec.filter_by))
                if chosen in held and parent is not None and held[chosen] != parent:
                    errors.append(link_filter_error(entity, spec, chosen, parent))
            if not errors and not actor.is_system:
                try:
                    service.access.check_assignee(connection, actor, entity.name, data.get("owner"))
                except RecordError as error:
                    errors = errors_of(error)
            if errors:
                self._reject(results[index], errors)
            else:
                kept.append((index, data, provided))
        return kept

    def _link_parents(self, connection: sa.Connection, entity: EntitySpec,
                      prepared: list[tuple[int, dict[str, Any], set[str]]]) -> dict[str, dict[int, Any]]:
        """For each `filter_by` link of the entity: the linked records' own parent (each chosen
        contact's account), one query per link over the batch — as `create` checks it row by row."""
        parents: dict[str, dict[int, Any]] = {}
        for spec in entity.fields:
            if spec.filter_by is None or spec.link_entity is None:
                continue
            ids = {data[spec.name] for _, data, _ in prepared
                   if data.get(spec.name) is not None and data.get(spec.filter_by) is not None}
            if ids:
                table = self.service.schema.table(spec.link_entity)
                parents[spec.name] = {row[0]: row[1] for row in connection.execute(
                    sa.select(table.c.id, table.c[spec.filter_by]).where(table.c.id.in_(sorted(ids))))}
        return parents

    def _split_duplicates(self, connection: sa.Connection, entity: EntitySpec,
                          prepared: list[tuple[int, dict[str, Any], set[str]]]
                          ) -> tuple[list[tuple[int, dict[str, Any], set[str]]], list[tuple[int, int]]]:
        """Rows with no duplicate anywhere (written set-wise), and rows that match a stored record
        or an earlier row of the batch (written through `create`, which merges them)."""
        if entity.dedup is None:
            return prepared, []
        service = self.service
        table = service.schema.table(entity.name)
        stored: dict[tuple[str, ...], set[tuple[Any, ...]]] = {}
        for key in entity.dedup.keys:
            values = {self._key_value(entity, key, data) for _, data, _ in prepared}
            values.discard(None)
            found: set[tuple[Any, ...]] = set()
            if len(key) == 1 and values:
                column = table.c[key[0]]
                listed = sorted(value[0] for value in values if value is not None)
                for start in range(0, len(listed), 900):
                    chunk = listed[start:start + 900]
                    found.update((row[0],) for row in connection.execute(sa.select(column).where(column.in_(chunk))))
            elif values:
                for value in values:
                    assert value is not None
                    params = dict(zip(key, value))
                    if service._statements.matching(entity.name, key).mapping(connection, params) is not None:
                        found.add(value)
            stored[key] = found
        seen: dict[tuple[str, ...], set[tuple[Any, ...]]] = {key: set() for key in entity.dedup.keys}
        fresh, again = [], []
        for index, data, provided in prepared:
            keyed = [(key, self._key_value(entity, key, data)) for key in entity.dedup.keys]
            if any(value is not None and (value in stored[key] or value in seen[key]) for key, value in keyed):
                again.append((index, index))
            else:
                fresh.append((index, data, provided))
            for key, value in keyed:
                if value is not None:
                    seen[key].add(value)
        return fresh, again

    def _key_value(self, entity: EntitySpec, key: tuple[str, ...], data: Mapping[str, Any]) -> tuple[Any, ...] | None:
        if any(data.get(name) is None for name in key):
            return None
        kinds = self.service.schema.kinds
        return tuple(kinds.of_field(entity.field(name)).to_row(entity.field(name), data[name])[name] for name in key)

    def _lock_keys(self, connection: sa.Connection, entity: EntitySpec, datas: list[dict[str, Any]]) -> None:
        """On PostgreSQL, serialise with concurrent creates of the same person: one statement."""
        service = self.service
        if service.db.is_sqlite or entity.dedup is None or not datas:
            return
        locks = set()
        for data in datas:
            for key, values in service._dedup_values(entity, data):
                text = f"{entity.name}|" + "|".join(f"{name}={values[name]}" for name in key)
                locks.add(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True))
        if locks:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                               {"keys": sorted(locks)})

    # -- writing ---------------------------------------------------------------------------

    def _write_fresh(self, connection: sa.Connection, entity: EntitySpec, rows: Sequence[Mapping[str, Any]],
                     fresh: list[tuple[int, dict[str, Any], set[str]]], results: list[RowResult], actor: Actor,
                     origin: Origin, history: bool, created: Mapping[int, dt.datetime]) -> None:
        if not fresh:
            return
        try:
            with savepoint(connection):
                self._insert_fresh(connection, entity, fresh, results, actor, origin, history, created)
        except RecordError:
            # an effect after the rows were written failed: write them one by one, each in its own savepoint
            for index, _, _ in fresh:
                results[index].outcome = "pending"
                self._create_one(connection, entity, rows[index], results[index], actor, origin, history,
                                 created.get(index))

    def _insert_fresh(self, connection: sa.Connection, entity: EntitySpec,
                      fresh: list[tuple[int, dict[str, Any], set[str]]], results: list[RowResult], actor: Actor,
                      origin: Origin, history: bool, created: Mapping[int, dt.datetime]) -> None:
        service = self.service
        now = service.clock.now()
        stamp = naive_utc(now)
        unique = [spec for spec in entity.fields if spec.is_unique]
        written: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        for index, data, _ in fresh:
            notes: dict[str, Any] = {}
            try:
                if service.observers:
                    data = service._observed(WriteContext(connection, entity, Change.CREATED, None, data, actor, now,
                                                          origin, None, notes, history))
                data = service.stamp_assigned(entity, data, created.get(index, now))
                if service.gates:
                    service._check_gates(WriteContext(connection, entity, Change.CREATED, None, data, actor, now,
                                                      origin, None, notes, history))
                if unique:
                    service._check_unique(connection, entity, data, None)
            except RecordError as error:
                self._reject(results[index], errors_of(error))
                continue
            row: dict[str, Any] = {"created_at": naive_utc(created[index]) if index in created else stamp,
                                   "updated_at": stamp, "created_by": actor.id, "owner": data.get("owner"), "version": 1}
            service.schema.kinds.fill_row(entity, data, row)
            if entity.dedup is not None:
                row["duplicate_of"] = None
            written.append((index, data, notes, row))
        if not written:
            return
        table = service.schema.table(entity.name)
        inserted = connection.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True),
                                      [row for _, _, _, row in written])
        ids = [row[0] for row in inserted]
        event_data = {"history": True} if history else None
        changes_of = creation_diff(entity, service.schema.kinds)
        records = []
        for (index, data, notes, row), record_id in zip(written, ids):
            record: dict[str, Any] = {"id": record_id, "created_at": as_utc(row["created_at"]), "updated_at": as_utc(stamp),
                                      "created_by": actor.id, "owner": data.get("owner"), "version": 1}
            record.update({spec.name: data.get(spec.name) for spec in entity.fields})
            if entity.dedup is not None:
                record["duplicate_of"] = None
            append_event(connection, service.schema, entity=entity.name, record_id=record_id, kind=EventKind.CREATED,
                         actor_id=actor.id, at=now, changes=changes_of(record),
                         data=event_data)
            records.append((index, record, notes))
        for index, record, notes in records:
            for observer in service.observers:
                observer.after_write(WriteContext(connection, entity, Change.CREATED, None, record, actor, now, origin,
                                                  None, notes, history))
            result = results[index]
            result.outcome, result.record_id, result.owner = "created", record["id"], record.get("owner")

    def _create_one(self, connection: sa.Connection, entity: EntitySpec, values: Mapping[str, Any],
                    result: RowResult, actor: Actor, origin: Origin, history: bool,
                    created_at: dt.datetime | None = None) -> None:
        try:
            with savepoint(connection):
                written = self.service.create(entity.name, values, actor=actor, within=connection, origin=origin,
                                              history=history, created_at=created_at)
        except RecordError as error:
            self._reject(result, errors_of(error))
            return
        result.outcome, result.record_id = written.outcome, written.record["id"]
        result.owner = written.record.get("owner")


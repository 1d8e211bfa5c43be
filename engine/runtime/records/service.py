"""RecordService: the only way a record is created, changed or deleted.

Every write runs the same steps in one transaction — coerce and validate, check links,
uniqueness and duplicates, write the row, append the event — so no entry point (API,
screens, webhooks, import, rules, timers) can skip one.
"""

from __future__ import annotations

import builtins  # inside RecordService, `list` names its method: annotations there say builtins.list
import contextlib
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine.metamodel import DedupAction, EntitySpec, FieldType, Metamodel, OnDelete
from engine.metamodel.roles import Scope
from engine.rules import Clock, Evaluator
from engine.runtime.records.actors import Actor
from engine.runtime.records.batch import BatchWriter, RowResult
from engine.runtime.records.errors import (DuplicateRecord, NotFound, QueryInvalid, QuotaExceeded, RecordReferenced,
                                           StageRefused, UnknownEntity, ValidationFailed, VersionConflict)
from engine.runtime.records.events import SYSTEM_JSON, Event, append_event, diff, read_events, value_json
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.storage.times import as_utc
from engine.runtime.records.permissions import Access, Forbidden
from engine.runtime.records.conditions import row_condition_sql
from engine.runtime.records.queries import ALL_FIELDS, COUNT_CAP, Filter, ListQuery, Page, build_list_statements
from engine.runtime.storage.search import search_indexes, too_common
from engine.runtime.records.values import (apply_defaults, check_required, check_validations, coerce_input,
                                           compute_fields, is_empty, link_filter_error, references)
from engine.runtime.storage.database import Database, savepoint
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc
from engine.runtime.records.events import EventKind
from engine.runtime.records.lifecycle import ViewObserver, WriteContext, WriteGate, WriteObserver, WriteResult
from engine.rules.rules import Change, Origin

DEFAULT_UPLOAD_QUOTA = 500 * 2**20
SYSTEM_COLUMNS = ("id", "created_at", "updated_at", "created_by", "owner", "version")


class Statements:
    """Statements the write path runs on every call, prepared once (engine/runtime/prepared.py)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._cache: dict[tuple[str, ...], Prepared] = {}

    MAX_CACHED = 4096  # inserts and updates are prepared per set of columns: bounded, the oldest goes

    def _get(self, key: tuple[str, ...], build: Any, columns: tuple[str, ...] = ()) -> Prepared:
        statement = self._cache.get(key)
        if statement is None:
            if len(self._cache) >= self.MAX_CACHED:
                del self._cache[next(iter(self._cache))]
            statement = self._cache[key] = Prepared(build(), columns)
        return statement

    def by_id(self, entity: str) -> Prepared:
        table = self.schema.table(entity)
        return self._get(("by_id", entity), lambda: sa.select(table).where(table.c.id == sa.bindparam("id")))

    def user_active(self) -> Prepared:
        users = self.schema.users
        return self._get(("user",), lambda: sa.select(users.c.is_active).where(users.c.id == sa.bindparam("id")))

    def exists(self, target: str) -> Prepared:
        table = self.schema.files if target == "file" else self.schema.table(target)
        return self._get(("exists", target), lambda: sa.select(table.c.id).where(table.c.id == sa.bindparam("id")))

    def same_value(self, entity: str, field: str) -> Prepared:
        table = self.schema.table(entity)
        return self._get(("same", entity, field), lambda: sa.select(table.c.id).where(
            table.c[field] == sa.bindparam("value"), table.c.id != sa.bindparam("id")).limit(1))

    def insert(self, entity: str, columns: tuple[str, ...]) -> Prepared:
        """INSERT of these columns, returning the new id."""
        table = self.schema.table(entity)
        return self._get(("insert", entity, *columns), lambda: table.insert().returning(table.c.id), columns)

    def update(self, entity: str, columns: tuple[str, ...]) -> Prepared:
        """UPDATE of these columns of the row with id `u_id`, only while its version is `u_version`."""
        table = self.schema.table(entity)
        return self._get(("update", entity, *columns), lambda: table.update().where(
            table.c.id == sa.bindparam("u_id"), table.c.version == sa.bindparam("u_version")), columns)

    def matching(self, entity: str, key: tuple[str, ...]) -> Prepared:
        """The oldest record whose `key` fields all equal the bound values."""
        table = self.schema.table(entity)
        return self._get(("match", entity, *key), lambda: sa.select(table).where(
            *(table.c[name] == sa.bindparam(name) for name in key)).order_by(table.c.id).limit(1))


def _people_filters(entity: EntitySpec, query: ListQuery, actor: Actor) -> ListQuery:
    """`owner=me` (or any user field) is the signed-in user; `owner=unassigned` is no one."""
    people = {"owner", "created_by", *(spec.name for spec in entity.fields if spec.type is FieldType.USER)}
    filters = []
    for item in query.filters:
        if item.field in people and item.op in ("eq", "ne") and item.value in ("me", "unassigned"):
            if item.value == "me":
                item = Filter(item.field, item.op, str(actor.id) if actor.id is not None else "0")
            else:
                item = Filter(item.field, "isnull", "true" if item.op == "eq" else "false")
        filters.append(item)
    return dataclasses.replace(query, filters=tuple(filters))


class RecordService:
    def __init__(self, schema: Schema, db: Database, clock: Clock, evaluator: Evaluator) -> None:
        self.schema = schema
        self.model: Metamodel = schema.model
        self.db = db
        self.clock = clock
        self.evaluator = evaluator
        self._incoming = self._incoming_links()
        self.access = Access(self.model, schema)
        self._statements = Statements(schema)
        self.search_indexes = {index.table: index for index in search_indexes(schema)}
        self.observers: list[WriteObserver] = []
        self.gates: list[WriteGate] = []  # checks on the final values of every write (stage requirements)
        # named list filters other components add: name → (entity, table, value, now) → condition
        self.list_filters: dict[str, Callable[[str, sa.Table, str, dt.datetime], Any]] = {}
        self.upload_quota = DEFAULT_UPLOAD_QUOTA  # bytes of files one user may keep (the engine may set it)
        # named sort keys other components add: name → (entity, table) → an orderable expression
        self.list_orders: dict[str, Callable[[str, sa.Table], Any]] = {}

    @contextlib.contextmanager
    def _writing(self, within: sa.Connection | None) -> Iterator[sa.Connection]:
        """The caller's transaction when given (a timer, a rule action), else a new write transaction.
        A stage move refused at the top level is noted for `crm explain` once the write rolled back."""
        if within is not None:
            with savepoint(within):
                yield within
            return
        try:
            with self.db.write() as connection:
                yield connection
        except StageRefused as refused:
            self._note_refusal(refused)
            raise

    def _note_refusal(self, refused: StageRefused) -> None:
        """Keep why a move was refused (the record is unchanged; this is its explanation)."""
        if refused.record_id is None:
            return  # a record refused at its creation does not exist: there is nothing to explain it on
        try:
            with self.db.write() as connection:
                connection.execute(self.schema.traces.insert().values(
                    entity=refused.entity, record_id=refused.record_id, at=naive_utc(self.clock.now()),
                    change="refused", origin=refused.origin, text=refused.trace,
                    decisions={"refused": {"from": refused.source, "to": refused.target, "move": refused.move,
                                           "missing": refused.items("en")}}))
        except sa.exc.SQLAlchemyError:  # the explanation is a courtesy: never let it hide the refusal
            pass

    # -- reading -------------------------------------------------------------------------

    def entity(self, name: str) -> EntitySpec:
        if not self.model.has_entity(name):
            raise UnknownEntity(f"there is no entity '{name}' (known: {', '.join(self.model.entity_names())})")
        return self.model.entity(name)

    def get(self, entity_name: str, record_id: int, *, actor: Actor) -> dict[str, Any]:
        """One record as the actor may see it; Forbidden (403) when it lies outside their scope."""
        entity = self.entity(entity_name)
        self.access.require(actor, entity.name, "read")
        with self.db.read() as connection:
            record = self._fetch(connection, entity, record_id)
            self.access.check_record(connection, actor, entity.name, "read", record)
        return self.access.redact(actor, entity.name, record)

    def record_view(self, entity_name: str, record: Mapping[str, Any], *, actor: Actor) -> bool:
        """`actor` opened `record` (its record page, or GET on the API). When an observer acts
        on that — an SLA with a `viewed_by` stop — the view is written like a change: a
        `viewed` event on the timeline and the observers' effects, in one transaction.
        Otherwise nothing is written. Returns whether the view was written."""
        entity = self.entity(entity_name)
        if actor.is_system or actor.id is None:
            return False
        watchers = [observer for observer in self.observers
                    if isinstance(observer, ViewObserver) and observer.wants_view(entity, record, actor)]
        if not watchers:
            return False
        now = self.clock.now()
        with self.db.write() as connection:
            current = self._fetch(connection, entity, int(record["id"]))
            append_event(connection, self.schema, entity=entity.name, record_id=current["id"], kind=EventKind.VIEWED,
                         actor_id=actor.id, at=now)
            context = WriteContext(connection, entity, Change.VIEWED, current, current, actor, now)
            for observer in watchers:
                observer.after_write(context)
        return True

    def list(self, entity_name: str, query: ListQuery, *, actor: Actor, action: str = "read",
             sums: Iterable[str] = ()) -> Page:
        """A page of the records within the actor's scope for `action` (read, or export); `sums`:
        money or number fields totalled over every matching record (Page.extra["sums"])."""
        entity = self.entity(entity_name)
        table = self.schema.table(entity.name)
        page_query, count_query, hidden = self.list_statements(entity.name, query, actor=actor, action=action)
        totals = [name for name in sums if entity.has_field(name) and name not in hidden and name in table.c]
        offset = (query.page - 1) * query.per_page
        with self.db.read() as connection:
            # one row more than the page: whether a next page exists, without counting
            rows = connection.execute(page_query.limit(query.per_page + 1)).mappings().all()
            more = len(rows) > query.per_page
            rows = rows[:query.per_page]
            if rows and not more or not rows and query.page == 1:
                total, exact = offset + len(rows), True  # the last page: known without counting
            else:  # counted up to the cap: a count over a million rows costs more than the page
                total = int(connection.execute(sa.select(sa.func.count()).select_from(
                    count_query.with_only_columns(sa.literal(1)).limit(COUNT_CAP + 1).subquery())).scalar_one())
                total, exact = min(total, COUNT_CAP), total <= COUNT_CAP
            summed = connection.execute(count_query.with_only_columns(
                *(sa.func.sum(table.c[name]) for name in totals))).one() if totals else ()
        only = tuple(dict.fromkeys(("id", *query.fields))) if query.fields and query.fields != ALL_FIELDS else None
        items = [self.access.redact(actor, entity.name, self.record_from_row(entity, row, only)) for row in rows]
        extra = {"sums": dict(zip(totals, summed))} if totals else {}
        return Page(items, total, query.page, query.per_page, extra, exact, more)

    def list_statements(self, entity_name: str, query: ListQuery, *, actor: Actor,
                        action: str = "read") -> tuple[sa.Select[Any], sa.Select[Any], frozenset[str]]:
        """The page and count statements of a list as the actor sees it — their scope, the view's
        `where`, the named filters (sla, funnel), "me"/"unassigned" — and the fields hidden from
        them. The list screens, the API and every export read through it, so an export holds
        exactly the records its list shows. Raises Forbidden when `action` is not allowed."""
        entity = self.entity(entity_name)
        table = self.schema.table(entity.name)
        if action != "read":
            self.access.require(actor, entity.name, action)
        scope = self.access.row_condition(actor, entity.name, "read", table, dialect=self.db.engine.dialect.name,
                                          now=self.clock.now())
        self.access.check_readable(actor, entity.name, [f.field for f in query.filters] +
                                   [key.field for key in query.sort])
        hidden = self.access.permissions(actor, entity.name).hidden
        scope = self.list_scope(entity, table, query, scope)
        where = entity.list_view(query.view).where if query.view is not None else None
        if where is not None:
            condition = row_condition_sql(where, entity, table, kinds=self.schema.kinds,
                                          dialect=self.db.engine.dialect.name, me=actor.id, now=self.clock.now(),
                                          timezone=self.model.settings.timezone)
            scope = condition if scope is None else sa.and_(scope, condition)
        query = _people_filters(entity, query, actor)
        ordering = {name: build(entity.name, table) for name, build in self.list_orders.items()}
        search_index = self.search_indexes.get(entity.name)
        if search_index is not None and query.search and self.db.is_sqlite:
            with self.db.read() as connection:  # a text in most records: reading finds a page sooner
                if too_common(connection, search_index, table, query.search):
                    search_index = None
        page_query, count_query = build_list_statements(entity, table, query, self.db.engine.dialect.name,
                                                        kinds=self.schema.kinds, scope=scope, unsearchable=hidden,
                                                        ordering=ordering, search_index=search_index)
        return page_query, count_query, hidden

    def list_scope(self, entity: EntitySpec, table: sa.Table, query: ListQuery, scope: Any) -> Any:
        """The actor's row condition with the query's named filters (sla, funnel, within, stuck) added."""
        for name, value in (("sla", query.sla), ("funnel", query.funnel), ("within", query.within),
                            ("stuck", query.stuck)):
            if value is not None:
                scope = sa.and_(*(c for c in (scope, self._named_filter(name, entity, table, value)) if c is not None))
        return scope

    def _named_filter(self, name: str, entity: EntitySpec, table: sa.Table, value: str) -> Any:
        """A list filter contributed by an installed component (e.g. `sla` by the SLA clocks)."""
        build = self.list_filters.get(name)
        if build is None:
            raise QueryInvalid(f"this installation has no '{name}' filter", field=name)
        try:
            return build(entity.name, table, value, self.clock.now())
        except ValueError as error:
            raise QueryInvalid(str(error), field=name) from None

    def events(self, entity_name: str, record_id: int, *, actor: Actor) -> builtins.list[Event]:
        """The record's history, oldest first, without values of fields hidden from the actor."""
        entity = self.entity(entity_name)
        self.get(entity.name, record_id, actor=actor)
        hidden = self.access.permissions(actor, entity.name).hidden
        with self.db.read() as connection:
            events = read_events(connection, self.schema, entity.name, record_id)
        if not hidden:
            return events
        return [dataclasses.replace(event, changes={k: v for k, v in event.changes.items() if k not in hidden},
                                    data={k: v for k, v in event.data.items() if k != "incoming"})
                for event in events]

    def to_json(self, entity_name: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """The API form of a record: decimals as strings, money as {amount, currency}, times in ISO 8601."""
        converters = self.schema.kinds.json_converters(self.entity(entity_name))
        found = {}
        for name, value in record.items():
            to_json = None if value is None else SYSTEM_JSON.get(name) or converters.get(name)
            found[name] = value if to_json is None else to_json(value)
        return found

    def record_from_row(self, entity: EntitySpec, row: Mapping[str, Any] | sa.RowMapping,
                        only: Sequence[str] | None = None) -> dict[str, Any]:
        """The record a stored row holds; with `only`, just those fields, in that order (a list's
        `fields=`: the fields an item does not carry cost no conversion)."""
        if only is not None:
            return self._some_fields(entity, row, only)
        record: dict[str, Any] = {name: row[name] for name in SYSTEM_COLUMNS}
        record["created_at"] = as_utc(record["created_at"])
        record["updated_at"] = as_utc(record["updated_at"])
        kinds = self.schema.kinds.by_name  # every field of every row read: the plain lookup
        for spec in entity.fields:
            record[spec.name] = kinds[spec.kind].from_row(spec, row)
        if entity.dedup is not None:
            record["duplicate_of"] = row["duplicate_of"]
        return record

    def _some_fields(self, entity: EntitySpec, row: Mapping[str, Any] | sa.RowMapping,
                     only: Sequence[str]) -> dict[str, Any]:
        kinds = self.schema.kinds.by_name
        record: dict[str, Any] = {}
        for name in only:
            if name in ("created_at", "updated_at"):
                record[name] = as_utc(row[name])
            elif name in SYSTEM_COLUMNS or name == "duplicate_of":
                record[name] = row[name]
            else:
                spec = entity.field(name)
                record[name] = kinds[spec.kind].from_row(spec, row)
        return record

    def find(self, connection: sa.Connection, entity_name: str, record_id: int) -> dict[str, Any] | None:
        """The stored record in the caller's transaction, unredacted (for the engine's own work), or None."""
        row = self._statements.by_id(entity_name).mapping(connection, {"id": record_id})
        return None if row is None else self.record_from_row(self.entity(entity_name), row)

    def find_many(self, connection: sa.Connection, entity_name: str,
                  record_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """`find` for many records in one statement: id → record, for those that exist."""
        entity, table = self.entity(entity_name), self.schema.table(entity_name)
        rows = connection.execute(sa.select(table).where(table.c.id.in_(sorted(set(record_ids))))).mappings()
        return {row["id"]: self.record_from_row(entity, row) for row in rows}

    def _fetch(self, connection: sa.Connection, entity: EntitySpec, record_id: int) -> dict[str, Any]:
        record = self.find(connection, entity.name, record_id)
        if record is None:
            raise NotFound(f"{entity.name} {record_id} does not exist (it may have been deleted)", field="id")
        return record

    def _fetch_current(self, connection: sa.Connection, entity: EntitySpec, record_id: int,
                       expected_version: int | None) -> dict[str, Any]:
        """The record about to be changed; VersionConflict if the caller saw an older version."""
        current = self._fetch(connection, entity, record_id)
        if expected_version is not None and current["version"] != expected_version:
            raise VersionConflict(
                f"{entity.name} {record_id} was changed by someone else (your version {expected_version}, "
                f"current {current['version']}); reload it and apply your change again",
                field="version", current_version=current["version"])
        return current

    # -- creating ------------------------------------------------------------------------

    @staticmethod
    def stamp_assigned(entity: EntitySpec, data: dict[str, Any], moment: dt.datetime) -> dict[str, Any]:
        """A record created with an owner was assigned when it was created (`assigned_at:` on the
        entity), whoever gave the owner: a form, routing, the API or an import — history included."""
        if entity.assigned_at_field and data.get("owner") is not None and data.get(entity.assigned_at_field) is None:
            return {**data, entity.assigned_at_field: moment}
        return data

    def owner_on_create(self, entity: EntitySpec, actor: Actor) -> int | None:
        """Who owns a new record created without an owner: its creator — unless the entity routes new
        records (`owner_on_create: routing`), when its assign rules pick one (None), for a form, the API
        and an import alike. A creator who sees only their own records keeps what they type in (a
        rep's own cold call); the system creates unowned."""
        if actor.is_system:
            return None
        if not entity.routes_new_records or self.access.scope(actor, entity.name, "read") is Scope.OWN:
            return actor.id
        return None

    def create(self, entity_name: str, values: Mapping[str, Any], *, actor: Actor,
               within: sa.Connection | None = None, origin: Origin | str = Origin.USER, source: str | None = None,
               created_at: dt.datetime | None = None, history: bool = False) -> WriteResult:
        """Validate and insert a record; a dedup match updates, rejects or flags as the blueprint says.
        `created_at` (intake as a system actor, or an import of past records) backdates the record
        to when the customer actually submitted it, or when the old system first had it. `history`
        (imports of past records) writes a stage without its requirements being enforced; its
        events say `"history": true`."""
        origin = Origin(origin)
        entity = self.entity(entity_name)
        self._check_not_managed(entity, actor)
        self.access.require(actor, entity.name, "create")
        self.access.check_writable(actor, entity.name, [name for name in values if name != "owner"])
        data, errors = coerce_input(entity, values, kinds=self.schema.kinds)
        provided = set(data)
        errors += apply_defaults(entity, data, self.evaluator, kinds=self.schema.kinds)
        errors += compute_fields(entity, data, self.evaluator, kinds=self.schema.kinds)
        errors += check_required(entity, data, already_wrong=errors)
        if not errors:
            errors += check_validations(entity, data, self.evaluator)
        if errors:
            raise ValidationFailed(errors)
        if "owner" not in data and (owner := self.owner_on_create(entity, actor)) is not None:
            data["owner"] = owner
        now = self.clock.now()
        with self._writing(within) as connection:
            self.access.check_assignee(connection, actor, entity.name, data.get("owner"))
            self._check_references(connection, entity, data, actor)
            self._check_link_filters(connection, entity, data, set(data), actor)
            self._lock_dedup_keys(connection, entity, data)
            match = self._find_duplicate(connection, entity, data)
            if match is not None:
                existing, key = match
                on_match = entity.dedup.on_match if entity.dedup is not None else None  # (a match needs dedup keys)
                if on_match is DedupAction.UPDATE:
                    self._check_may_merge(connection, actor, entity, existing, key)
                    incoming = {name: data[name] for name in provided if not is_empty(data[name])}
                    record = self._update_row(connection, entity, existing, incoming, actor, now, kind=EventKind.MERGED,
                                              event_data={"matched_on": list(key),
                                                          "incoming": self._json_values(entity, incoming)},
                                              always_log=True, origin=origin, source=source, history=history)
                    return WriteResult(self.access.redact(actor, entity.name, record), "merged")
                if on_match is DedupAction.REJECT:
                    raise DuplicateRecord(
                        f"{entity.name} {existing['id']} already has the same {' + '.join(key)}; "
                        "update that record instead", 
                        field=key[0], existing_id=existing["id"])
                data["duplicate_of"] = existing["id"]
            self._check_unique(connection, entity, data, None)
            record = self._insert(connection, entity, data, actor, now, origin, source,
                                  created_at if actor.is_system or history else None, history=history)
            if record.get("duplicate_of"):
                append_event(connection, self.schema, entity=entity.name, record_id=record["id"],
                             kind=EventKind.DUPLICATE_FLAGGED, actor_id=actor.id, at=now,
                             data={"duplicate_of": record["duplicate_of"]})
                return WriteResult(self.access.redact(actor, entity.name, record), "flagged")
            return WriteResult(self.access.redact(actor, entity.name, record), "created")

    def create_batch(self, entity_name: str, rows: Sequence[Mapping[str, Any]], *, actor: Actor,
                     connection: sa.Connection, origin: Origin | str = Origin.IMPORT,
                     history: bool = False) -> builtins.list[RowResult]:
        """`create` for many rows in the caller's transaction, asking the database set-wise
        (records/batch.py): one outcome per row — created, merged, flagged or rejected with reasons."""
        return BatchWriter(self).create_batch(entity_name, rows, actor=actor, connection=connection,
                                              origin=Origin(origin), history=history)

    def _check_may_merge(self, connection: sa.Connection, actor: Actor, entity: EntitySpec,
                         existing: dict[str, Any], key: tuple[str, ...]) -> None:
        """Merging changes the existing record, so it needs update rights on it; without them the
        create is refused as a duplicate (revealing nothing of the other record)."""
        try:
            self.access.check_record(connection, actor, entity.name, "update", existing)
        except Forbidden:
            raise DuplicateRecord(f"a {entity.name} with the same {' + '.join(key)} already exists and belongs "
                                  "to someone else; ask its owner or a manager", field=key[0]) from None

    def _insert(self, connection: sa.Connection, entity: EntitySpec, data: dict[str, Any], actor: Actor,
                now: dt.datetime, origin: Origin = Origin.USER, source: str | None = None,
                created_at: dt.datetime | None = None, *, history: bool = False) -> dict[str, Any]:
        notes: dict[str, Any] = {}
        if self.observers:
            data = self._observed(WriteContext(connection, entity, Change.CREATED, None, data, actor, now, origin, source,
                                               notes, history))
        data = self.stamp_assigned(entity, data, created_at or now)
        if self.gates:
            self._check_gates(WriteContext(connection, entity, Change.CREATED, None, data, actor, now, origin, source,
                                           notes, history))
        stamp = naive_utc(now)
        created = naive_utc(created_at or now)
        row: dict[str, Any] = {"created_at": created, "updated_at": stamp, "created_by": actor.id,
                               "owner": data.get("owner"), "version": 1}
        self.schema.kinds.fill_row(entity, data, row)
        if entity.dedup is not None:
            row["duplicate_of"] = data.get("duplicate_of")
        record_id = self._statements.insert(entity.name, tuple(row)).scalar(connection, row)
        record = {"id": record_id, "created_at": as_utc(created), "updated_at": as_utc(stamp),
                  "created_by": actor.id, "owner": data.get("owner"), "version": 1}
        record.update({spec.name: data.get(spec.name) for spec in entity.fields})
        if entity.dedup is not None:
            record["duplicate_of"] = row["duplicate_of"]
        append_event(connection, self.schema, entity=entity.name, record_id=record_id, kind=EventKind.CREATED,
                     actor_id=actor.id, at=now, changes=diff(entity, self.schema.kinds, None, record),
                     data={"history": True} if history else None)
        for observer in self.observers:
            observer.after_write(WriteContext(connection, entity, Change.CREATED, None, record, actor, now, origin, source,
                                              notes, history))
        return record

    def _check_gates(self, context: WriteContext) -> None:
        for gate in self.gates:
            gate.check(context)

    @staticmethod
    def _check_not_managed(entity: EntitySpec, actor: Actor) -> None:
        """Approval requests and tasks are opened by the engine (a request from the record it approves)."""
        if entity.is_managed and not actor.is_system:
            raise Forbidden(f"{entity.name} records are created by the engine: request an approval from the record "
                            "it approves (POST /api/{entity}/{id}/approvals/{approval})", field=None,
                            permission="create", entity=entity.name)

    def _observed(self, context: WriteContext) -> dict[str, Any]:
        """The candidate values with every observer's changes applied, recomputed and re-validated."""
        data = dict(context.after)
        candidate = dataclasses.replace(context, after=data)  # one view for all: `data` itself takes their changes
        for observer in self.observers:
            changes = observer.before_write(candidate)
            if not changes:
                continue
            typed, errors = coerce_input(context.entity, {name: value for name, value in changes.items()
                                                          if name not in ("duplicate_of",)},
                                        kinds=self.schema.kinds, trusted=True)
            if errors:
                raise ValidationFailed([FieldError(error.field, error.code, f"{error.message} (set by a rule)")
                                        for error in errors])
            data.update(typed)
        if data != context.after:
            errors = compute_fields(context.entity, data, self.evaluator, kinds=self.schema.kinds)
            # the candidate passed (or was spared) every rule already: re-check those whose fields changed
            errors += check_validations(context.entity, data, self.evaluator, before=context.after)
            if errors:
                raise ValidationFailed(errors)
        return data

    # -- updating ------------------------------------------------------------------------

    def update(self, entity_name: str, record_id: int, changes: Mapping[str, Any], *, actor: Actor,
               expected_version: int | None = None, within: sa.Connection | None = None,
               origin: Origin | str = Origin.USER, history: bool = False) -> dict[str, Any]:
        """Change some fields. With `expected_version`, a record changed meanwhile raises VersionConflict.
        `history` (imports of past records) writes a stage without its requirements being enforced."""
        origin = Origin(origin)
        entity = self.entity(entity_name)
        self.access.require(actor, entity.name, "update")
        self.access.check_writable(actor, entity.name, [name for name in changes if name != "owner"])
        data, errors = coerce_input(entity, changes, kinds=self.schema.kinds)
        if errors:
            raise ValidationFailed(errors)
        now = self.clock.now()
        with self._writing(within) as connection:
            current = self._fetch_current(connection, entity, record_id, expected_version)
            self._check_may_update(connection, actor, entity, current, data)
            record = self._update_row(connection, entity, current, data, actor, now, origin=origin, history=history)
        return self.access.redact(actor, entity.name, record)

    def _check_may_update(self, connection: sa.Connection, actor: Actor, entity: EntitySpec,
                          current: dict[str, Any], data: Mapping[str, Any]) -> None:
        self.access.check_record(connection, actor, entity.name, "update", current)
        if "owner" in data and data["owner"] != current["owner"]:
            self.access.check_record(connection, actor, entity.name, "assign", current)
            self.access.check_assignee(connection, actor, entity.name, data["owner"])

    def _update_row(self, connection: sa.Connection, entity: EntitySpec, current: dict[str, Any],
                    data: dict[str, Any], actor: Actor, now: dt.datetime, *, kind: EventKind = EventKind.UPDATED,
                    event_data: dict[str, Any] | None = None, always_log: bool = False, origin: Origin = Origin.USER,
                    source: str | None = None, history: bool = False) -> dict[str, Any]:
        merged = {**current, **data}
        notes: dict[str, Any] = {}
        if self.observers and diff(entity, self.schema.kinds, current, merged):
            merged = self._observed(WriteContext(connection, entity, Change.UPDATED, current, merged, actor, now,
                                                 origin, source, notes, history))
        if entity.assigned_at_field and merged.get("owner") is not None and merged.get("owner") != current["owner"] \
                and not history:
            merged[entity.assigned_at_field] = now  # every assignment, whoever made it
        errors = compute_fields(entity, merged, self.evaluator, kinds=self.schema.kinds)
        errors += check_required(entity, merged, set(data))
        if not errors:
            errors += check_validations(entity, merged, self.evaluator, before=current)
        if errors:
            raise ValidationFailed(errors)
        if self.gates:
            self._check_gates(WriteContext(connection, entity, Change.UPDATED, current, merged, actor, now, origin,
                                           source, notes, history))
        if history:
            event_data = {**(event_data or {}), "history": True}
        changes = diff(entity, self.schema.kinds, current, merged)
        if not changes:
            if always_log:
                append_event(connection, self.schema, entity=entity.name, record_id=current["id"], kind=kind,
                             actor_id=actor.id, at=now, data=event_data)
            return current
        changed = {name: merged[name] for name in changes}
        self._check_references(connection, entity, changed, actor)
        self._check_link_filters(connection, entity, merged, set(changed), actor)
        self._check_unique(connection, entity, changed, current["id"])
        stamp = naive_utc(now)
        row: dict[str, Any] = {"updated_at": stamp, "version": current["version"] + 1}
        for name, value in changed.items():
            if name == "owner":
                row["owner"] = value
            else:
                spec = entity.field(name)
                row.update(self.schema.kinds.of_field(spec).to_row(spec, value))
        updated = self._statements.update(entity.name, tuple(row)).run(
            connection, {**row, "u_id": current["id"], "u_version": current["version"]})
        if updated != 1:
            raise VersionConflict(f"{entity.name} {current['id']} was changed by someone else while saving; "
                                  "reload it and apply your change again", field="version")
        merged.update(updated_at=as_utc(stamp), version=current["version"] + 1)
        append_event(connection, self.schema, entity=entity.name, record_id=current["id"], kind=kind,
                     actor_id=actor.id, at=now, changes=changes, data=event_data)
        if "owner" in changes:
            append_event(connection, self.schema, entity=entity.name, record_id=current["id"], kind=EventKind.ASSIGNED,
                         actor_id=actor.id, at=now, changes={"owner": changes["owner"]})
        for observer in self.observers:
            observer.after_write(WriteContext(connection, entity, Change.UPDATED, current, merged, actor, now, origin, source,
                                              notes, history))
        return merged

    def transition(self, entity_name: str, record_id: int, target: str, *, field: str | None = None,
                   actor: Actor, expected_version: int | None = None, within: sa.Connection | None = None,
                   origin: Origin | str = Origin.USER, history: bool = False) -> dict[str, Any]:
        """Move a record's stage (a choice field; by default `stage`, else `status`) to `target`.
        A funnel's gate checks the move and what the stages demand, as for any other write."""
        entity = self.entity(entity_name)
        name = field or entity.stage_field
        if name is None or not entity.has_field(name) or entity.field(name).type is not FieldType.CHOICE:
            raise ValidationFailed([FieldError(name or "field", "not_a_stage",
                                               f"{entity.name} has no choice field '{name or 'stage'}' to move")])
        self.access.require(actor, entity.name, "update")
        self.access.check_writable(actor, entity.name, [name])
        data, errors = coerce_input(entity, {name: target}, kinds=self.schema.kinds)
        if errors:
            raise ValidationFailed(errors)
        now = self.clock.now()
        with self._writing(within) as connection:
            current = self._fetch_current(connection, entity, record_id, expected_version)
            self._check_may_update(connection, actor, entity, current, data)
            record = self._update_row(connection, entity, current, data, actor, now, kind=EventKind.TRANSITIONED,
                                      event_data={"field": name, "from": current[name], "to": data[name]},
                                      origin=Origin(origin), history=history)
        return self.access.redact(actor, entity.name, record)

    def store_file(self, name: str, content_type: str, content: bytes, *, actor: Actor,
                   within: sa.Connection | None = None) -> dict[str, Any]:
        """Keep an uploaded file; attachment fields hold the returned id. QuotaExceeded (413)
        when the uploader's files would pass their quota (`upload_quota`, bytes)."""
        now = naive_utc(self.clock.now())
        digest = hashlib.sha256(content).hexdigest()
        files = self.schema.files
        with self._writing(within) as connection:
            if not actor.is_system and actor.id is not None:
                used = int(connection.execute(sa.select(sa.func.coalesce(sa.func.sum(files.c.size), 0))
                                              .where(files.c.created_by == actor.id)).scalar_one())
                if used + len(content) > self.upload_quota:
                    raise QuotaExceeded(
                        f"your uploads would take {(used + len(content)) // 2**20} MB, above your quota of "
                        f"{self.upload_quota // 2**20} MB; delete files you no longer need or ask an administrator",
                        field="file")
            key = connection.execute(files.insert().values(
                name=name, content_type=content_type, size=len(content), sha256=digest, content=content,
                created_by=actor.id, created_at=now)).inserted_primary_key
            assert key is not None  # None only for statements other than an INSERT
            file_id = key[0]
        return {"id": file_id, "name": name, "content_type": content_type, "size": len(content), "sha256": digest}

    def read_file(self, file_id: int, *, actor: Actor) -> Any:
        """The stored file (a row: name, content_type, content, sha256) if the actor may read it:
        its uploader, or anyone who may read a record it is attached to (through a field not
        hidden from them). NotFound otherwise — the same answer as for a file that does not exist."""
        files = self.schema.files
        with self.db.read() as connection:
            row = connection.execute(sa.select(files).where(files.c.id == file_id)).first()
            if row is None or not self.may_read_file(connection, actor, file_id, row.created_by):
                raise NotFound(f"file {file_id} does not exist, or is attached to nothing you may read", field="id")
        return row

    def may_read_file(self, connection: sa.Connection, actor: Actor, file_id: int, uploader: int | None) -> bool:
        """Access to a file follows the records it is attached to; an unattached file is its uploader's."""
        if actor.is_system or (uploader is not None and uploader == actor.id):
            return True
        for entity in self.model.entities:
            names = [spec.name for spec in entity.fields if spec.type is FieldType.ATTACHMENT]
            if not names or self.access.scope(actor, entity.name, "read") is Scope.NONE:
                continue
            hidden = self.access.permissions(actor, entity.name).hidden
            table = self.schema.table(entity.name)
            columns = [table.c[name] for name in names if name not in hidden]
            if not columns:
                continue
            condition = sa.or_(*(column == file_id for column in columns))
            scope = self.access.row_condition(actor, entity.name, "read", table)
            if scope is not None:
                condition = sa.and_(condition, scope)
            if connection.execute(sa.select(table.c.id).where(condition).limit(1)).first() is not None:
                return True
        return False

    # -- deleting ------------------------------------------------------------------------

    def delete(self, entity_name: str, record_id: int, *, actor: Actor, expected_version: int | None = None,
               within: sa.Connection | None = None) -> None:
        """Delete a record; records linking to it are blocked, unlinked or deleted per their on_delete."""
        entity = self.entity(entity_name)
        self.access.require(actor, entity.name, "delete")
        now = self.clock.now()
        with self._writing(within) as connection:
            current = self._fetch_current(connection, entity, record_id, expected_version)
            self.access.check_record(connection, actor, entity.name, "delete", current)
            self._delete_row(connection, entity, current, actor, now)

    def _delete_row(self, connection: sa.Connection, entity: EntitySpec, current: dict[str, Any], actor: Actor,
                    now: dt.datetime) -> None:
        for source, field_name, on_delete in self._incoming.get(entity.name, ()):
            table = self.schema.table(source.name)
            linked = connection.execute(sa.select(table).where(table.c[field_name] == current["id"])
                                        .order_by(table.c.id)).mappings().all()
            if not linked:
                continue
            if on_delete is OnDelete.RESTRICT:
                raise RecordReferenced(
                    f"cannot delete {entity.name} {current['id']}: {len(linked)} {source.name} record(s) link to it "
                    f"through '{field_name}'; delete or relink them first", field="id",
                    referencing_entity=source.name, count=len(linked))
            for row in linked:
                record = self.record_from_row(source, row)
                if on_delete is OnDelete.CASCADE:
                    self._delete_row(connection, source, record, actor, now)
                else:
                    self._update_row(connection, source, record, {field_name: None}, actor, now)
        table = self.schema.table(entity.name)
        connection.execute(table.delete().where(table.c.id == current["id"]))
        append_event(connection, self.schema, entity=entity.name, record_id=current["id"], kind=EventKind.DELETED,
                     actor_id=actor.id, at=now, changes=diff(entity, self.schema.kinds, current, None))
        for observer in self.observers:
            observer.after_write(WriteContext(connection, entity, Change.DELETED, current, current, actor, now))

    def _incoming_links(self) -> dict[str, builtins.list[tuple[EntitySpec, str, OnDelete]]]:
        incoming: dict[str, builtins.list[tuple[EntitySpec, str, OnDelete]]] = {}
        for source in self.model.entities:
            for spec in source.fields:
                if spec.type is FieldType.LINK and spec.link_entity:
                    incoming.setdefault(spec.link_entity, []).append((source, spec.name, spec.on_delete))
        return incoming

    # -- checks that need the database ---------------------------------------------------

    def _check_references(self, connection: sa.Connection, entity: EntitySpec, data: Mapping[str, Any],
                          actor: Actor | None = None) -> None:
        """Every link, user and file the values name must exist (and a user be active). The acting
        user needs no look-up: they were authenticated as an active user for this request."""
        errors = []
        for spec, target, record_id in references(entity, data):
            name = spec.name if spec else "owner"
            if target == "user" and actor is not None and not actor.is_system and record_id == actor.id:
                continue
            if target == "user":
                row = self._statements.user_active().first(connection, {"id": record_id})
                if row is None:
                    errors.append(FieldError(name, "unknown_user", f"{name}: there is no user {record_id}",
                                             f"没有编号为 {record_id} 的用户"))
                elif not row.is_active:
                    errors.append(FieldError(name, "inactive_user", f"{name}: user {record_id} is disabled",
                                             "该用户已停用，请选择其他人"))
                continue
            if not self._may_link(connection, actor, target, record_id):
                # a record or file out of the actor's reach answers exactly like one that does not exist
                what = "file" if target == "file" else target
                errors.append(FieldError(name, "unknown_reference", f"{name}: there is no {what} {record_id} "
                                                                    "that you may read",
                                         f"所选记录（{record_id}）不存在或您无权查看"))
        if errors:
            raise ValidationFailed(errors)

    def _check_link_filters(self, connection: sa.Connection, entity: EntitySpec, values: Mapping[str, Any],
                            changed: set[str], actor: Actor | None) -> None:
        """A link declared `filter_by: G` must point at a record whose own G is this record's G (the
        chosen account's contact), as the form offered it; people only — the engine's own writes
        (rules, conversions, intake) are trusted."""
        if actor is None or actor.is_system:
            return
        errors = []
        for spec in entity.fields:
            parent = spec.filter_by
            if parent is None or spec.link_entity is None or not ({spec.name, parent} & changed):
                continue
            chosen, wanted = values.get(spec.name), values.get(parent)
            if chosen is None or wanted is None:
                continue
            table = self.schema.table(spec.link_entity)
            held = connection.execute(sa.select(table.c[parent]).where(table.c.id == chosen)).scalar()
            if held != wanted:
                errors.append(link_filter_error(entity, spec, chosen, wanted))
        if errors:
            raise ValidationFailed(errors)

    def _may_link(self, connection: sa.Connection, actor: Actor | None, target: str, record_id: int) -> bool:
        """The link target exists and lies within the actor's read scope (an uploaded file: see
        `may_read_file`). The engine's own writes (rules, intake, timers) link to anything."""
        if target == "file":
            files = self.schema.files
            row = connection.execute(sa.select(files.c.created_by).where(files.c.id == record_id)).first()
            return row is not None and (actor is None or self.may_read_file(connection, actor, record_id,
                                                                             row.created_by))
        if actor is None or actor.is_system:
            return self._statements.exists(target).first(connection, {"id": record_id}) is not None
        table = self.schema.table(target)
        condition = table.c.id == record_id
        if self.access.scope(actor, target, "read") is Scope.NONE:
            return False
        scope = self.access.row_condition(actor, target, "read", table)
        if scope is not None:
            condition = sa.and_(condition, scope)
        return connection.execute(sa.select(table.c.id).where(condition)).first() is not None

    def _check_unique(self, connection: sa.Connection, entity: EntitySpec, data: Mapping[str, Any],
                      record_id: int | None) -> None:
        errors = []
        for spec in entity.fields:
            value = data.get(spec.name)
            if not spec.is_unique or value is None:
                continue
            existing = self._statements.same_value(entity.name, spec.name).scalar(
                connection, {"value": value, "id": record_id or 0})
            if existing is not None:
                errors.append(FieldError(spec.name, "not_unique",
                                         f"{spec.name}: '{value}' is already used by {entity.name} {existing}",
                                         f"“{value}”已被第 {existing} 条记录使用"))
        if errors:
            raise ValidationFailed(errors)

    def _dedup_values(self, entity: EntitySpec,
                      data: Mapping[str, Any]) -> builtins.list[tuple[tuple[str, ...], dict[str, Any]]]:
        if entity.dedup is None:
            return []
        return [(key, {name: data[name] for name in key}) for key in entity.dedup.keys
                if all(data.get(name) is not None for name in key)]

    def _lock_dedup_keys(self, connection: sa.Connection, entity: EntitySpec, data: Mapping[str, Any]) -> None:
        """On PostgreSQL, serialise concurrent creates of the same person (SQLite writes are serial)."""
        if self.db.is_sqlite:
            return
        for key, values in self._dedup_values(entity, data):
            text = f"{entity.name}|" + "|".join(f"{name}={values[name]}" for name in key)
            lock_id = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})

    def _find_duplicate(self, connection: sa.Connection, entity: EntitySpec,
                        data: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
        for key, values in self._dedup_values(entity, data):
            params = {name: self.schema.kinds.of_field(entity.field(name)).to_row(entity.field(name), value)[name]
                      for name, value in values.items()}
            row = self._statements.matching(entity.name, key).mapping(connection, params)
            if row is not None:
                return self.record_from_row(entity, row), key
        return None

    def _json_values(self, entity: EntitySpec, data: Mapping[str, Any]) -> dict[str, Any]:
        return {name: value_json(entity, name, value, self.schema.kinds) for name, value in data.items()}

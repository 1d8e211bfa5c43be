"""Planned schema changes: compare the blueprint's tables with the database, sort the
differences into safe and destructive steps, and apply them with Alembic operations.

Safe steps (new table, column or index; widening a type; dropping an index) apply on
every start. Destructive steps (dropping a table or column, narrowing a type) are refused
unless the caller passes `allow_destructive=True`; the plan says how many values each
would destroy. Only tables the engine created are ever considered for dropping.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.metamodel.cache import cache_folder
from engine.runtime.storage.database import Database
from engine.runtime.storage.search import (SearchChange, apply_search, is_search_object, plan_search,
                                           search_indexes)
from engine.runtime.storage.tables import TABLES, Schema

if TYPE_CHECKING:  # Alembic is imported when a plan is made (a start that finds nothing to change needs none)
    from alembic.migration import MigrationContext


@dataclass(frozen=True, slots=True)
class Step:
    description: str
    is_destructive: bool
    operation: Any = field(compare=False, repr=False)
    table: str = ""


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    steps: tuple[Step, ...]

    @property
    def is_empty(self) -> bool:
        return not self.steps

    @property
    def destructive(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.is_destructive)

    def describe(self) -> str:
        if not self.steps:
            return "The database matches the blueprint: nothing to change."
        lines = []
        for step in self.steps:
            marker = "DESTRUCTIVE" if step.is_destructive else "safe"
            lines.append(f"  [{marker:>11}] {step.description}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """What `apply_migration` did: the steps applied, and the destructive ones it refused."""

    applied: tuple[Step, ...]
    refused: tuple[Step, ...]

    def describe(self) -> str:
        lines = [f"applied: {step.description}" for step in self.applied]
        lines += [f"REFUSED: {step.description}" for step in self.refused]
        if self.refused:
            lines.append("Destructive steps were not applied; the data is still there. Restore the "
                         "field/entity in the blueprint, or run `crm migrate --allow-destructive` after a backup.")
        return "\n".join(lines) or "The database matches the blueprint: nothing to change."


_WIDER = {
    ("VARCHAR", "TEXT"), ("INTEGER", "BIGINT"), ("SMALLINT", "INTEGER"), ("SMALLINT", "BIGINT"),
    ("INTEGER", "NUMERIC"), ("BIGINT", "NUMERIC"), ("DATE", "DATETIME"), ("DATE", "TIMESTAMP"),
}


def _type_name(type_: Any) -> str:
    name = type(type_).__name__.upper()
    return {"STRING": "VARCHAR", "BIGINTEGER": "BIGINT", "TIMESTAMP": "DATETIME",
            "DOUBLE_PRECISION": "FLOAT", "DECIMAL": "NUMERIC"}.get(name, name)


def _is_widening(old: Any, new: Any) -> bool:
    old_name, new_name = _type_name(old), _type_name(new)
    if old_name == new_name == "VARCHAR":
        return (new.length or 10**9) >= (old.length or 10**9)
    if old_name == new_name == "NUMERIC":
        return (new.precision or 0) >= (old.precision or 0) and (new.scale or 0) >= (old.scale or 0)
    return (old_name, new_name) in _WIDER


def _compare_type(context: Any, inspected: Any, metadata_column: Any, inspected_type: Any,
                  metadata_type: Any) -> bool:
    """Report a type change only when the DDL differs (reflection spells some types differently)."""
    dialect = context.dialect
    old: str
    new: str
    try:
        old, new = inspected_type.compile(dialect=dialect), metadata_type.compile(dialect=dialect)
    except Exception:  # a reflected type the dialect cannot render: compare by name
        old, new = _type_name(inspected_type), _type_name(metadata_type)
    aliases = {"JSONB": "JSON", "BIGINTEGER": "BIGINT", "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP"}
    return aliases.get(old.upper(), old.upper()) != aliases.get(new.upper(), new.upper())


@contextlib.contextmanager
def _migration_connection(db: Database) -> Iterator[sa.Connection]:
    """A connection for DDL. On SQLite foreign keys are switched off while tables are rebuilt,
    otherwise rebuilding a parent table would cascade-delete its children."""
    with db.engine.connect().execution_options(crm_write=True) as connection:
        # (SQLAlchemy types driver_connection as optional: None only once the pool invalidated it)
        if db.is_sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with db._write_lock if db.is_sqlite else contextlib.nullcontext():
                with connection.begin():
                    yield connection
        finally:
            if db.is_sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _managed_tables(connection: sa.Connection, schema: Schema) -> set[str]:
    inspector = sa.inspect(connection)
    if not inspector.has_table(TABLES):
        return set()
    return {row[0] for row in connection.execute(sa.select(schema.metadata.tables[TABLES].c.name))}


def _context(connection: sa.Connection, schema: Schema) -> MigrationContext:
    from alembic.migration import MigrationContext
    known = set(schema.metadata.tables) | _managed_tables(connection, schema)

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table":
            return name in known
        return not is_search_object(name)  # the search indexes are planned by engine/runtime/storage/search.py

    return MigrationContext.configure(connection, opts={
        "include_name": include_name,
        "compare_type": _compare_type,
        "compare_server_default": False,
        "render_as_batch": connection.dialect.name == "sqlite",
    })


def _count(connection: sa.Connection, table: str, column: str | None = None) -> int:
    target = sa.table(table) if column is None else sa.table(table, sa.column(column))
    query = sa.select(sa.func.count()).select_from(target)
    if column is not None:
        query = query.where(sa.column(column).is_not(None))
    return int(connection.execute(query).scalar_one())


def _describe(connection: sa.Connection, op: Any, table: str) -> Step:
    from alembic.operations import ops
    if isinstance(op, ops.CreateTableOp):
        return Step(f"create table {op.table_name}", False, op, op.table_name)
    if isinstance(op, ops.DropTableOp):
        rows = _count(connection, op.table_name)
        return Step(f"drop table {op.table_name} ({rows} rows would be lost)", True, op, op.table_name)
    if isinstance(op, ops.AddColumnOp):
        return Step(f"add column {table}.{op.column.name} ({op.column.type})", False, op, table)
    if isinstance(op, ops.DropColumnOp):
        values = _count(connection, table, op.column_name)
        return Step(f"drop column {table}.{op.column_name} ({values} non-empty values would be lost)",
                    True, op, table)
    if isinstance(op, ops.AlterColumnOp):
        if op.modify_type is not None:
            old, new = op.existing_type, op.modify_type
            widening = _is_widening(old, new)
            verb = "widen" if widening else "narrow/change"
            return Step(f"{verb} type of {table}.{op.column_name}: {old} → {new}", not widening, op, table)
        if op.modify_nullable is not None:
            return Step(f"make {table}.{op.column_name} {'optional' if op.modify_nullable else 'required'}",
                        not op.modify_nullable, op, table)
        return Step(f"alter column {table}.{op.column_name}", False, op, table)
    if isinstance(op, ops.CreateIndexOp):
        columns = ", ".join(str(c) for c in op.columns)
        return Step(f"create {'unique ' if op.unique else ''}index {op.index_name} on {table}({columns})",
                    False, op, table)
    if isinstance(op, ops.DropIndexOp):
        return Step(f"drop index {op.index_name} on {table} (no data is lost)", False, op, table)
    if isinstance(op, (ops.CreateForeignKeyOp, ops.DropConstraintOp, ops.CreateUniqueConstraintOp)):
        return Step(f"{type(op).__name__.removesuffix('Op')} {getattr(op, 'constraint_name', '')} on {table}",
                    False, op, table)
    return Step(f"{type(op).__name__} on {table}", True, op, table)


def plan_migration(db: Database, schema: Schema) -> MigrationPlan:
    """What would change to make the database match `schema` (nothing is changed)."""
    with db.engine.connect() as connection:
        with connection.begin():
            return _plan(connection, schema)


def _plan(connection: sa.Connection, schema: Schema) -> MigrationPlan:
    from alembic.autogenerate import produce_migrations
    from alembic.operations import ops
    script = produce_migrations(_context(connection, schema), schema.metadata)
    assert script.upgrade_ops is not None  # produce_migrations always fills it (None only in a bare MigrationScript)
    steps: list[Step] = []
    for op in script.upgrade_ops.ops:
        if isinstance(op, ops.ModifyTableOps):
            steps.extend(_describe(connection, inner, op.table_name) for inner in op.ops)
        else:
            steps.append(_describe(connection, op, getattr(op, "table_name", "")))
    steps.extend(Step(change.describe(), False, change, change.index.table)
                 for change in plan_search(connection, schema))
    return MigrationPlan(tuple(steps))


def apply_migration(db: Database, schema: Schema, *, allow_destructive: bool = False) -> MigrationOutcome:
    """Bring the database to `schema` in one transaction. Safe steps always apply; destructive
    ones only with `allow_destructive`, otherwise they are returned as refused and nothing of
    the data they concern changes."""
    from alembic.operations import Operations, ops
    with _migration_connection(db) as connection:
        plan = _plan(connection, schema)
        refused = () if allow_destructive else plan.destructive
        applied = tuple(step for step in plan.steps if step not in refused)
        operations = Operations(_context(connection, schema))
        new_tables = [schema.metadata.tables[step.table] for step in applied
                      if isinstance(step.operation, ops.CreateTableOp)]
        # create_all orders new tables by their links and defers constraints that form cycles
        schema.metadata.create_all(connection, tables=new_tables, checkfirst=False)
        created = {table.name for table in new_tables}
        by_table: dict[str, list[Step]] = {}
        for step in applied:
            if isinstance(step.operation, SearchChange):
                continue  # built last, below
            if isinstance(step.operation, ops.DropTableOp):
                operations.invoke(step.operation)
            elif step.table not in created:  # a new table's indexes came with create_all
                by_table.setdefault(step.table, []).append(step)
        for table, steps in by_table.items():
            if db.is_sqlite:
                with operations.batch_alter_table(table) as batch:
                    for step in steps:
                        batch.invoke(step.operation)
            else:
                for step in steps:
                    operations.invoke(step.operation)
        # Planned again: rebuilding a SQLite table above drops its search triggers.
        apply_search(connection, schema, plan_search(connection, schema))
        kept = {step.table for step in refused if isinstance(step.operation, ops.DropTableOp)}
        _record_managed_tables(connection, schema, kept)
        return MigrationOutcome(applied, refused)


def _record_managed_tables(connection: sa.Connection, schema: Schema, kept: set[str]) -> None:
    """Remember which tables are ours, so a later plan may propose dropping them (and no other)."""
    managed = schema.metadata.tables[TABLES]
    connection.execute(sa.delete(managed))
    names = sorted(set(schema.tables) | kept)
    if names:
        connection.execute(sa.insert(managed), [{"name": name} for name in names])


KEEP_MARKERS = 64  # databases whose clean schema is remembered (the newest)


def migrate_on_start(db: Database, schema: Schema, *, allow_destructive: bool = False,
                     folder: Path | None = None) -> MigrationOutcome:
    """`apply_migration` as every start runs it, skipped on a SQLite file whose schema (every
    CREATE statement in sqlite_master, and the tables the engine manages) is exactly what an
    earlier start left with nothing to change for this same target schema: comparing the
    database with Alembic was a third of a restart. Any change to the file's schema, by
    anyone, or to the blueprint's tables makes a new fingerprint, and the full plan runs.
    A start that refused destructive steps is never remembered, so it reports them each time."""
    folder = folder if folder is not None else cache_folder()
    marker = _clean_marker(db, schema, folder)
    if marker is not None and marker.exists():
        return MigrationOutcome((), ())
    outcome = apply_migration(db, schema, allow_destructive=allow_destructive)
    if not outcome.refused:
        marker = _clean_marker(db, schema, folder)  # (the migration changed the file's schema)
        if marker is not None:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                markers = sorted(marker.parent.glob("schema-clean-*"), key=lambda item: item.stat().st_mtime)
                for old in markers[:-KEEP_MARKERS]:
                    old.unlink(missing_ok=True)
            except OSError:
                pass
    return outcome


def _clean_marker(db: Database, schema: Schema, folder: Path | None) -> Path | None:
    """The cache file that says "this file schema needs nothing for this target", or None where
    the shortcut does not apply (PostgreSQL, an in-memory SQLite, no cache folder)."""
    database = db.engine.url.database
    if folder is None or not db.is_sqlite or not database or database == ":memory:" or "mode=memory" in str(db.engine.url):
        return None
    digest = hashlib.sha256()
    dialect = db.engine.dialect
    for table in schema.metadata.sorted_tables:
        digest.update(str(sa.schema.CreateTable(table).compile(dialect=dialect)).encode())
        for index in sorted(table.indexes, key=lambda item: item.name or ""):
            digest.update(str(sa.schema.CreateIndex(index).compile(dialect=dialect)).encode())
    for search in search_indexes(schema):  # a changed search: list rebuilds its index
        digest.update("\n".join(search.sqlite_statements()).encode())
    digest.update(b"\0database\0")
    with db.engine.connect() as connection:
        for row in connection.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                              "ORDER BY type, name"):
            digest.update(repr(tuple(row)).encode())
        if connection.exec_driver_sql(f"SELECT 1 FROM sqlite_master WHERE name = '{TABLES}'").first():
            for row in connection.exec_driver_sql(f"SELECT name FROM {TABLES} ORDER BY name"):
                digest.update(repr(tuple(row)).encode())
        connection.rollback()
    return folder / f"schema-clean-{digest.hexdigest()[:40]}"

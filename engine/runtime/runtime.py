"""Wiring: one `Runtime` holds the metamodel, the database, the clock and the RecordService."""

from __future__ import annotations

from dataclasses import dataclass

from engine.metamodel import Metamodel
from engine.rules import Clock, Evaluator, SystemClock

from .database import Database
from .migrations import MigrationOutcome, apply_migration
from .records import RecordService
from .tables import Schema, build_schema


@dataclass
class Runtime:
    model: Metamodel
    schema: Schema
    db: Database
    clock: Clock
    records: RecordService
    migration: MigrationOutcome | None = None

    def close(self) -> None:
        self.db.dispose()


def open_runtime(model: Metamodel, db_url: str, *, clock: Clock | None = None, migrate: bool = True,
                 allow_destructive: bool = False) -> Runtime:
    """Connect to `db_url` and, unless told not to, apply the blueprint's safe schema changes."""
    clock = clock or SystemClock()
    schema = build_schema(model)
    db = Database(db_url)
    outcome = apply_migration(db, schema, allow_destructive=allow_destructive) if migrate else None
    evaluator = Evaluator(clock, model.settings.timezone, dict(model.settings.territories))
    runtime = Runtime(model, schema, db, clock, RecordService(schema, db, clock, evaluator), outcome)
    from .automation import install_rules  # automation imports Runtime: installed once it exists
    install_rules(runtime)
    from .timekeeping import install_timekeeping  # SLA clocks and cadences on every write
    install_timekeeping(runtime)
    from .clocks import sla_condition
    runtime.records.list_filters["sla"] = lambda entity, table, value, now: sla_condition(runtime, entity, table,
                                                                                           value, now)
    return runtime

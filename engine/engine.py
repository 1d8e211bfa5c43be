"""Wiring: one `Runtime` holds the metamodel, the database, the clock and the RecordService."""

from __future__ import annotations

from dataclasses import dataclass

from engine.metamodel import Metamodel
from engine.rules import Clock, Evaluator, SystemClock
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database
from engine.runtime.storage.migrations import MigrationOutcome, apply_migration
from engine.runtime.storage.tables import Schema, build_schema


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
    from engine.runtime.automation.rules import install_rules
    install_rules(runtime)
    from engine.runtime.automation.sla import install_timekeeping
    install_timekeeping(runtime)
    from engine.runtime.automation.clocks import sla_condition
    runtime.records.list_filters["sla"] = lambda entity, table, value, now: sla_condition(runtime, entity, table,
                                                                                           value, now)
    return runtime

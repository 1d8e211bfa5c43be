"""The composition root: `open_engine` builds one `Engine` from a blueprint and a database URL.

This is the only module that knows every component; each component receives the
collaborators it uses and nothing imports this module back (cli.py and the tests do,
engine/io receives an Engine). The order below is the order of a write:

    RecordService ─ observers: rules (RulesObserver) → SLA clocks (SlaClocks) → cadences (CadenceClocks)
                    → funnels (Funnels) → approvals (ApprovalDesk), all applying actions through one
                    ActionExecutor, which routes with the Router; gates: the funnels' stage
                    requirements, the approvals' guard on decisions
    Worker        ─ timer handlers of the SLA clocks and cadences, the outbox deliverer, scheduled jobs
    web app       ─ WebServices: records, users, intake, doctor, clocks

The plugins' contributions (engine/extensions.py) are handed to the components that use
them: field kinds to the schema, functions to the evaluator, action verbs to the executor,
channel types to the deliverer, widgets to the web app.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from starlette.applications import Starlette

from engine.io.imports import Importer
from engine.extensions import Extensions, load_extensions
from engine.metamodel import Metamodel
from engine.rules import Clock, Evaluator, SystemClock
from engine.rules.calendars import BusinessCalendar, build_calendar
from engine.runtime.automation.actions import ActionExecutor
from engine.runtime.automation.alerts import AlertWindows
from engine.runtime.automation.approvals import ApprovalDesk
from engine.runtime.automation.cadences import CadenceClocks
from engine.runtime.automation.clocks import ClockStore, sla_condition, sla_due_order
from engine.runtime.automation.funnels import Funnels
from engine.runtime.automation.related import RelatedReader
from engine.runtime.automation.reroute import Rerouter
from engine.runtime.automation.routing import Router
from engine.runtime.automation.rules import RulesObserver
from engine.analytics import Analytics, stage_condition, stuck_condition, within_condition
from engine.analytics.metrics import backfill_stage_moves
from engine.runtime.automation.scores import ScoreKeeper
from engine.runtime.automation.sla import SlaClocks
from engine.runtime.automation.surveys import SurveyDesk, SurveyLinks
from engine.runtime.automation.sources import Intake
from engine.runtime.background.delivery import OutboxDeliverer, digests_for, next_attempt_for, pacing_for
from engine.runtime.background.jobs import Jobs
from engine.runtime.background.timers import SqlTimerStore, TimerHandler
from engine.runtime.background.worker import Worker, quiet_busy_ticks
from engine.runtime.ops.doctor import Doctor
from engine.runtime.ops.users import Users
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database
from engine.runtime.storage.migrations import MigrationOutcome, migrate_on_start
from engine.runtime.storage.tables import Schema, build_schema
from engine.runtime.web.app import create_app
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.auth import secret_key
from engine.runtime.automation.inbox import InboxObserver
from engine.runtime.web.services import WebServices
from engine.runtime.web.widgets import WidgetRegistry

log = logging.getLogger(__name__)
WORKER_ROLES = ("all", "timers", "outbox")


@dataclass
class Engine:
    """One blueprint running on one database: the write path and everything wired into it."""

    model: Metamodel
    schema: Schema
    db: Database
    clock: Clock
    records: RecordService
    evaluator: Evaluator
    calendars: Mapping[str, BusinessCalendar]
    router: Router
    actions: ActionExecutor
    slas: SlaClocks
    cadences: CadenceClocks
    users: Users
    intake: Intake
    doctor: Doctor
    extensions: Extensions
    funnels: Funnels
    approvals: ApprovalDesk | None = None
    base_url: str = ""
    migration: MigrationOutcome | None = None
    scores: ScoreKeeper | None = None   # the scores: documents' keeper; its nightly pass is a worker job
    surveys: SurveyDesk | None = None   # satisfaction survey links: issued on close, answered without signing in

    @property
    def rerouter(self) -> Rerouter:
        """Routes existing records again (`crm route`, the unassigned list's bulk action)."""
        return Rerouter(self.model, self.schema, self.db, self.clock, self.records, self.router, self.evaluator)

    @property
    def analytics(self) -> Analytics:
        """Dashboard figures over this engine's records and stage events (engine/analytics)."""
        return Analytics(self.model, self.schema, self.db, self.records)

    @property
    def importer(self) -> Importer:
        """Spreadsheet imports through the batch write path (engine/io/imports.py)."""
        return Importer(self.records, self.clock)

    @property
    def timer_handlers(self) -> dict[str, TimerHandler]:
        return {**self.slas.handlers, **self.cadences.handlers}

    def worker(self, *, role: str = "all", environ: Mapping[str, str] | None = None, name: str | None = None,
               extra_handlers: Mapping[str, TimerHandler] | None = None, batch: int = 500) -> Worker:
        """A worker with the SLA and cadence handlers, the channel deliverer, the blueprint's retries
        and jobs. `role` splits the work between processes: "timers" fires timers and runs jobs,
        "outbox" only delivers notifications, "all" does both."""
        if role not in WORKER_ROLES:
            raise ValueError(f"unknown worker role '{role}': choose one of {', '.join(WORKER_ROLES)}")
        timers, outbox = role in ("all", "timers"), role in ("all", "outbox")
        deliver = OutboxDeliverer(self.model, self.clock.now, environ=environ,
                                  channels=self.extensions.channels) if outbox else None
        jobs = Jobs(self.model, self.schema, self.db, self.clock, self.records, self.calendars, self.base_url,
                    scores=self.scores)
        return Worker(self.db, self.schema, self.clock, handlers={**self.timer_handlers, **(extra_handlers or {})},
                      deliver=deliver, next_attempt=next_attempt_for(self.model),
                      jobs=jobs.scheduled_jobs() if timers else (), name=name, batch=batch, fire_timers=timers,
                      pacing=pacing_for(self.model),
                      digests=digests_for(self.model, lambda language: translate(language, "digest_header")))

    def start_background_worker(self, *, interval: float = 1.0,
                                environ: Mapping[str, str] | None = None) -> Callable[[], None]:
        """Tick a worker in this process (APScheduler BackgroundScheduler); returns a function that stops it."""
        from apscheduler.schedulers.background import BackgroundScheduler

        worker = self.worker(environ=environ)
        quiet_busy_ticks()
        scheduler = BackgroundScheduler()

        def tick() -> None:
            try:
                worker.tick()
            except Exception:  # a failing tick must not kill the web process; the next tick tries again
                log.exception("background worker tick failed")

        scheduler.add_job(tick, "interval", seconds=interval, max_instances=1, coalesce=True,
                          next_run_time=dt.datetime.now(dt.timezone.utc))
        scheduler.start()
        return lambda: scheduler.shutdown(wait=False)

    def web_app(self, *, widgets: WidgetRegistry | None = None, key: str | None = None) -> Starlette:
        """The Starlette application: screens, JSON API and webhooks (with the plugins' widgets
        unless `widgets` are given); `key` signs session cookies (default: see `secret_key`)."""
        services = WebServices(self.model, self.schema, self.db, self.clock, self.records, self.users, self.intake,
                               self.doctor, self.slas, self.cadences, self.funnels, self.approvals,
                               self.rerouter, analytics=self.analytics, base_url=self.base_url,
                               surveys=self.surveys)
        return create_app(services, widgets=widgets or self.extensions.widgets, key=key)

    def on_clock(self, clock: Clock, *, rules: bool = True) -> Engine:
        """The same engine on the same database, writing at `clock`'s time (the demo writes its
        history at past moments); `rules=False` leaves the blueprint's rules out of its writes."""
        return _assemble(self.model, self.schema, self.db, clock, self.users.hasher, self.extensions,
                         base_url=self.base_url, rules=rules, migration=self.migration)

    def close(self) -> None:
        self.db.dispose()


def open_engine(model: Metamodel, db_url: str, *, clock: Clock | None = None, migrate: bool = True,
                allow_destructive: bool = False, base_url: str | None = None,
                password_hasher: PasswordHasher | None = None, extensions: Extensions | None = None) -> Engine:
    """Connect to `db_url` and, unless told not to, apply the blueprint's safe schema changes.
    `extensions`: the plugins' contributions (default: the engine's own and the installed ones)."""
    extensions = extensions or load_extensions()
    schema = build_schema(model, extensions.field_kinds)
    db = Database(db_url)
    outcome = migrate_on_start(db, schema, allow_destructive=allow_destructive) if migrate else None
    if migrate and model.funnels:  # a database from before crm_stage_moves: copy its stage events in once
        with db.write() as connection:
            backfill_stage_moves(connection, schema)
    return _assemble(model, schema, db, clock or SystemClock(), password_hasher or PasswordHasher(), extensions,
                     base_url=base_url if base_url is not None else os.environ.get("CRM_BASE_URL", ""),
                     migration=outcome)


def _assemble(model: Metamodel, schema: Schema, db: Database, clock: Clock, hasher: PasswordHasher,
              extensions: Extensions, *, base_url: str, rules: bool = True,
              migration: MigrationOutcome | None = None) -> Engine:
    evaluator = Evaluator(clock, model.settings.timezone, dict(model.settings.territories), extensions.functions)
    records = RecordService(schema, db, clock, evaluator)
    calendars = {decl.name: build_calendar(decl) for decl in model.calendars}
    router = Router(model, schema, records, evaluator)
    actions = ActionExecutor(model, schema, records, router, evaluator, base_url=base_url, verbs=extensions.actions)
    clocks = ClockStore(schema, records)
    timers = SqlTimerStore(schema, clock.now)
    slas = SlaClocks(model, db, clocks, timers, calendars, evaluator, actions)
    cadences = CadenceClocks(model, db, clocks, timers, calendars, evaluator, actions)
    related = RelatedReader(model, schema, evaluator)
    approvals = ApprovalDesk(model, schema, db, records, evaluator, actions, related) if model.approvals else None
    actions.approvals = approvals  # request_approval: the executor and the approvals each need the other
    funnels = Funnels(model, schema, db, evaluator, related, approvals)
    if rules and (model.rules or model.sources):
        records.observers.append(RulesObserver(model, schema, evaluator, actions))
    if model.slas:
        records.observers.append(slas)
    if model.cadences:
        records.observers.append(cadences)
    if model.funnels:  # after the rules: a rule's transition is gated like anyone's
        records.observers.append(funnels)
        records.gates.append(funnels)
    if approvals is not None:
        records.observers.append(approvals)
        records.gates.append(approvals)
    if model.alerts:  # after the rules: a rule may fill the fields an alert groups by
        records.observers.append(AlertWindows(model, schema, records, evaluator, actions))
    scores = ScoreKeeper(model, records, evaluator, related) if model.scores else None
    if scores is not None:
        records.observers.append(scores)
    surveys = None
    if model.surveys:  # links signed with the installation's secret key, the one the web app uses
        links = SurveyLinks(lambda: secret_key(db.url), base_url)
        surveys = SurveyDesk(model, schema, db, records, evaluator, links)
        records.observers.append(surveys)
    records.observers.append(InboxObserver(model, schema))  # "assigned to you" in the new owner's inbox
    records.list_filters["sla"] = lambda entity, table, value, now: sla_condition(schema, entity, table, value, now)
    records.list_orders["sla_due"] = lambda entity, table: sla_due_order(schema, entity, table)
    records.list_filters["funnel"] = lambda entity, table, value, now: stage_condition(model, schema, entity, table,
                                                                                       value)
    records.list_filters["within"] = lambda entity, table, value, now: within_condition(model, entity, table, value,
                                                                                        db.engine.dialect.name)
    records.list_filters["stuck"] = lambda entity, table, value, now: stuck_condition(model, schema, entity, table,
                                                                                      value, now)
    return Engine(model, schema, db, clock, records, evaluator, calendars, router, actions, slas, cadences,
                  Users(model, schema, db, clock, hasher), Intake(model, schema, db, clock, records),
                  Doctor(model, schema, db, clock, records, translate, funnels, slas), extensions, funnels, approvals, base_url,
                  migration, scores, surveys)


"""Timekeeping in the engine: SLA clocks and cadences on every write, their timers, and the worker.

`install_timekeeping(runtime)` registers one write observer. On each write it asks the
pure deciders (engine/rules/cadences.py) what happens to each SLA clock and cadence of
the record, then — in the write's own transaction — schedules, moves or cancels timer
rows and updates the crm_clocks row. A rolled-back write leaves no timer and no message.

The worker's timer handlers ("sla", "cadence") re-check the clock at fire time and run the
blueprint's actions in the timer's transaction: notify (outbox), reassign, set, tag,
create a related record — all through RecordService with a system actor and origin "timer".
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine.engine import Runtime
from engine.metamodel.actions import CreateStep, NotifyStep, ReassignStep, SetStep, TagStep, TimeAction
from engine.metamodel.cadences import CadenceSpec
from engine.metamodel.entities import EntitySpec
from engine.metamodel.expressions import Expression
from engine.metamodel.sla import SlaSpec
from engine.rules.cadences import (ClockDecision, ClockSnapshot, Move, decide_cadence, decide_sla, reply_stops,
                                   step_offset, view_stop_reason)
from engine.rules.calendars import BusinessCalendar
from engine.rules.sla import Checkpoint, SlaStatus, checkpoint_key_prefix, checkpoint_keys, sla_checkpoints, sla_state
from engine.rules.timers import DueTimer, TimerRequest
from engine.runtime.automation.clocks import (build_calendar, build_policy, cadence_prefix, load_clock, load_clocks,
                                              mark_breached, save_clock)
from engine.runtime.background.delivery import enqueue_notification, people_context
from engine.runtime.background.timers import BatchedHandler, SqlTimerStore
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.events import append_event
from engine.runtime.records.service import WriteContext
from engine.runtime.storage.database import savepoint

log = logging.getLogger(__name__)
_CHECKPOINT_EVENTS = {"warning": "sla_warning", "breach": "sla_breached", "escalation": "sla_escalated"}


@dataclasses.dataclass(eq=False)
class _ReadAhead:
    """What a batch of timers reads, read in a few statements before the first one fires
    (`Timekeeping.batch`); an entry is dropped when the batch writes what it holds."""

    connection: sa.Connection
    clocks: dict[tuple[str, str, int, str], ClockSnapshot | None]
    records: dict[tuple[str, int], dict[str, Any] | None]
    users: dict[int, Any]


_read_ahead: contextvars.ContextVar[_ReadAhead | None] = contextvars.ContextVar("crm_read_ahead", default=None)


class Timekeeping:
    """The write observer and timer handlers for one runtime's SLA policies and cadences."""

    def __init__(self, runtime: Runtime, *, base_url: str = "") -> None:
        self.runtime = runtime
        self.model = runtime.model
        self.schema = runtime.schema
        self.store = SqlTimerStore(runtime.schema, runtime.clock.now)
        self.base_url = base_url.rstrip("/")
        self._calendars = {decl.name: build_calendar(decl) for decl in self.model.calendars}
        self._slas = {spec.name: spec for spec in self.model.slas}
        self._cadences = {spec.name: spec for spec in self.model.cadences}
        self._policies = {spec.name: build_policy(spec, self.calendar(spec.calendar)) for spec in self.model.slas}
        self.handlers = {"sla": BatchedHandler(self.fire_sla, self.batch),
                         "cadence": BatchedHandler(self.fire_cadence, self.batch)}

    # -- look-ups --------------------------------------------------------------------------
    def calendar(self, name: str | None) -> BusinessCalendar | None:
        return self._calendars.get(name) if name else None

    def sla(self, name: str) -> SlaSpec | None:
        return self._slas.get(name)

    def _evaluate(self, expression: Expression, values: Mapping[str, Any]) -> Any:
        return self.runtime.records.evaluator.evaluate(expression, values)

    # -- the write observer -----------------------------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        return {}

    def wants_view(self, entity: EntitySpec, record: Mapping[str, Any], actor: Any) -> bool:
        """Whether `actor` opening `record` would stop one of its clocks (a `viewed_by` stop)."""
        watching = [(kind, spec) for kind, specs in (("sla", self._slas), ("cadence", self._cadences))
                    for spec in specs.values()
                    if spec.entity == entity.name and view_stop_reason(spec.stops, record, actor.id)]
        if not watching:
            return False
        with self.runtime.db.read() as connection:
            for kind, spec in watching:
                clock = load_clock(connection, self.schema, kind, entity.name, int(record["id"]), spec.name)
                if clock is not None and (clock.is_active if kind == "sla" else clock.state == "running"):
                    return True
        return False

    def after_write(self, context: WriteContext) -> None:
        """Start, move, pause or stop this record's clocks, and stop cadences a reply ends."""
        entity, after = context.entity.name, context.after
        record_id = int(after["id"])
        ahead = self._ahead(context.connection)
        if ahead is not None:
            ahead.records.pop((entity, record_id), None)
        is_new = context.change == "created"  # a record written just now has no clocks yet
        viewer = context.actor.id if context.change == "viewed" else None
        for spec in self._slas.values():
            if spec.entity == entity:
                current = None if is_new else load_clock(context.connection, self.schema, "sla", entity, record_id,
                                                         spec.name)
                decision = decide_sla(spec, current, context.change, context.before, after, context.now,
                                      self._evaluate, viewer=viewer)
                if decision.move is not Move.NONE:
                    self._apply_sla(context.connection, spec, record_id, current, decision, context.now)
        for cadence in self._cadences.values():
            if cadence.entity == entity:
                current = None if is_new else load_clock(context.connection, self.schema, "cadence", entity,
                                                         record_id, cadence.name)
                decision = decide_cadence(cadence, current, context.change, context.before, after, context.now,
                                          self._evaluate, viewer=viewer)
                if decision.move is not Move.NONE:
                    self._apply_cadence(context.connection, cadence, record_id, current, decision, context.now)
            target = reply_stops(cadence, entity, context.change, context.before, after, self._evaluate)
            if target is not None:
                self._stop_cadence(context.connection, cadence, target, context.now, f"customer replied ({entity})")

    # -- SLA effects ------------------------------------------------------------------------
    def _apply_sla(self, connection: sa.Connection, spec: SlaSpec, record_id: int, current: ClockSnapshot | None,
                   decision: ClockDecision, now: dt.datetime) -> None:
        move, clock = decision.move, decision.clock
        self._forget_clock(connection, "sla", spec.entity, record_id, spec.name)
        if current is not None and move in (Move.RESTART, Move.PAUSE, Move.STOP, Move.CANCEL):
            self.store.cancel(connection, checkpoint_key_prefix(spec.name, spec.entity, record_id, current.started_at),
                              spec.entity, record_id)
        if clock is None:  # the record is gone
            connection.execute(self.schema.clocks.delete().where(
                self.schema.clocks.c.kind == "sla", self.schema.clocks.c.entity == spec.entity,
                self.schema.clocks.c.record_id == record_id, self.schema.clocks.c.name == spec.name))
            return
        due_at = None
        if clock.state == "running" and move in (Move.START, Move.RESTART, Move.RESUME, Move.RETIER):
            due_at = self._schedule_checkpoints(connection, spec, record_id, clock)
        met = clock.breached_at is None if move is Move.STOP else None
        save_clock(connection, self.schema, "sla", spec.entity, record_id, spec.name, clock, now, due_at=due_at,
                   reason=decision.reason, met=met)
        if move is Move.RESTART and spec.starts.kind == "updated":
            return  # "silent overdue" restarts on every change; the change itself is the timeline entry
        append_event(connection, self.schema, entity=spec.entity, record_id=record_id, kind=f"sla_{move.value}",
                     actor_id=None, at=now, data={"policy": spec.name, "reason": decision.reason,
                                                  "due_at": due_at.isoformat() if due_at else None,
                                                  **({"met": met} if met is not None else {})})

    def _schedule_checkpoints(self, connection: sa.Connection, spec: SlaSpec, record_id: int,
                              clock: ClockSnapshot) -> dt.datetime | None:
        checkpoints: list[Checkpoint] = sla_checkpoints(self._policies[spec.name], clock.started_at, clock.tier,
                                                        clock.pauses, self.calendar(spec.calendar))
        keys = checkpoint_keys(spec.name, spec.entity, record_id, clock.started_at, checkpoints)
        cycle = clock.started_at.isoformat()
        self.store.schedule(connection, *(TimerRequest(
            "sla", key, checkpoint.due_at, spec.entity, record_id,
            {"policy": spec.name, "checkpoint": checkpoint.name, "cycle": cycle})
            for key, checkpoint in zip(keys, checkpoints)))
        return next((c.due_at for c in checkpoints if c.kind.value == "breach"), None)

    def fire_sla(self, connection: sa.Connection, timer: DueTimer, now: dt.datetime) -> None:
        """An SLA checkpoint came due: re-check the clock, then record it and run its actions once."""
        spec = self._slas.get(str(timer.payload.get("policy")))
        if spec is None or timer.record_id is None:
            return  # the policy left the blueprint; nothing to do
        clock = self._clock(connection, "sla", spec.entity, timer.record_id, spec.name)
        if clock is None or clock.state != "running" or clock.started_at.isoformat() != timer.payload.get("cycle"):
            return  # paused, stopped or restarted since it was scheduled
        kind, _, percent = str(timer.payload["checkpoint"]).partition("-")
        calendar = self.calendar(spec.calendar)
        status = sla_state(now, self._policies[spec.name], clock.started_at, clock.tier, clock.pauses, calendar)
        if status.elapsed + dt.timedelta(seconds=1) < status.target * int(percent) / 100:
            log.warning("SLA timer %s fired before its checkpoint; skipped", timer.key)
            return
        record = self._record(connection, spec.entity, timer.record_id)
        if record is None:
            return
        if kind == "breach":
            mark_breached(connection, self.schema, spec.entity, timer.record_id, spec.name, now)
            ahead = self._ahead(connection)
            if ahead is not None:
                ahead.clocks[("sla", spec.entity, timer.record_id, spec.name)] = dataclasses.replace(
                    clock, breached_at=now)
        # a warning that comes due only after the breach (the worker was down) is recorded, not sent
        late = kind == "warning" and status.elapsed >= status.target
        append_event(connection, self.schema, entity=spec.entity, record_id=timer.record_id,
                     kind=_CHECKPOINT_EVENTS[kind], actor_id=None, at=now,
                     data={"policy": spec.name, "checkpoint": timer.payload["checkpoint"],
                           "due_at": status.due_at.isoformat() if status.due_at else None,
                           **({"skipped": "already breached"} if late else {})})
        if late:
            return
        actions = {"warning": spec.on_warning, "breach": spec.on_breach, "escalation": spec.on_escalation}[kind]
        extra = {"sla": self._sla_context(spec, status, percent)}
        self.run_actions(connection, spec.entity, record, actions, now, key=timer.key, extra=extra)

    def _sla_context(self, spec: SlaSpec, status: SlaStatus, percent: str) -> dict[str, Any]:
        return {"policy": spec.name, "label": spec.label.text("zh"), "state": status.state.value,
                "due_at": status.due_at, "remaining": status.remaining, "target": status.target,
                "elapsed": status.elapsed, "percent": int(percent)}

    # -- cadence effects --------------------------------------------------------------------
    def _apply_cadence(self, connection: sa.Connection, cadence: CadenceSpec, record_id: int,
                       current: ClockSnapshot | None, decision: ClockDecision, now: dt.datetime) -> None:
        self._forget_clock(connection, "cadence", cadence.entity, record_id, cadence.name)
        if current is not None and decision.move in (Move.RESTART, Move.STOP, Move.CANCEL):
            self.store.cancel(connection, cadence_prefix(cadence.name, cadence.entity, record_id, current.started_at),
                              cadence.entity, record_id)
        clock = decision.clock or ClockSnapshot(now, "cancelled")
        next_due = None
        if decision.move in (Move.START, Move.RESTART):
            next_due = self._schedule_steps(connection, cadence, record_id, clock.started_at)
        save_clock(connection, self.schema, "cadence", cadence.entity, record_id, cadence.name, clock, now,
                   due_at=next_due, reason=decision.reason)
        append_event(connection, self.schema, entity=cadence.entity, record_id=record_id,
                     kind=f"cadence_{decision.move.value}", actor_id=None, at=now,
                     data={"cadence": cadence.name, "reason": decision.reason})

    def _schedule_steps(self, connection: sa.Connection, cadence: CadenceSpec, record_id: int,
                        started_at: dt.datetime) -> dt.datetime | None:
        calendar = self.calendar(cadence.calendar) if cadence.business_time else None
        prefix = cadence_prefix(cadence.name, cadence.entity, record_id, started_at)
        requests = []
        for index, step in enumerate(cadence.steps):
            offset = step_offset(step.after, calendar.working_day_length if calendar else dt.timedelta(days=1))
            due = calendar.add_business_time(started_at, offset) if calendar else started_at + offset
            requests.append(TimerRequest(
                "cadence", f"{prefix}{index}:{step.name}", due, cadence.entity, record_id,
                {"cadence": cadence.name, "step": step.name, "index": index, "cycle": started_at.isoformat()}))
        self.store.schedule(connection, *requests)
        return requests[0].due_at if requests else None

    def _stop_cadence(self, connection: sa.Connection, cadence: CadenceSpec, record_id: int, now: dt.datetime,
                      reason: str) -> None:
        current = load_clock(connection, self.schema, "cadence", cadence.entity, record_id, cadence.name)
        if current is not None and current.state == "running":
            self._apply_cadence(connection, cadence, record_id, current,
                                ClockDecision(Move.STOP, ClockSnapshot(current.started_at, "stopped"), reason), now)

    def fire_cadence(self, connection: sa.Connection, timer: DueTimer, now: dt.datetime) -> None:
        """A cadence step came due: run its actions unless the run stopped; the last step completes it."""
        cadence = self._cadences.get(str(timer.payload.get("cadence")))
        if cadence is None or timer.record_id is None:
            return
        clock = self._clock(connection, "cadence", cadence.entity, timer.record_id, cadence.name)
        if clock is None or clock.state != "running" or clock.started_at.isoformat() != timer.payload.get("cycle"):
            return
        record = self._record(connection, cadence.entity, timer.record_id)
        if record is None:
            return
        index = int(timer.payload["index"])
        step = cadence.steps[index]
        append_event(connection, self.schema, entity=cadence.entity, record_id=timer.record_id, kind="cadence_step",
                     actor_id=None, at=now, data={"cadence": cadence.name, "step": step.name})
        self.run_actions(connection, cadence.entity, record, step.actions, now, key=timer.key,
                         extra={"cadence": {"name": cadence.name, "step": step.name}})
        if index == len(cadence.steps) - 1:
            later = self._clock(connection, "cadence", cadence.entity, timer.record_id, cadence.name)
            if later is not None and later.state == "running" and later.started_at == clock.started_at:
                self._forget_clock(connection, "cadence", cadence.entity, timer.record_id, cadence.name)
                save_clock(connection, self.schema, "cadence", cadence.entity, timer.record_id, cadence.name,
                           ClockSnapshot(clock.started_at, "done"), now, reason="all steps done")

    # -- actions ----------------------------------------------------------------------------
    def run_actions(self, connection: sa.Connection, entity: str, record: dict[str, Any],
                    actions: Sequence[TimeAction], now: dt.datetime, *, key: str, extra: Mapping[str, Any]) -> None:
        """Run a checkpoint's or step's actions; one that fails is logged as an event, the rest still run."""
        owner_before = record.get("owner")
        for index, action in enumerate(actions):
            if isinstance(action, NotifyStep):  # only writes to the outbox: needs no savepoint of its own
                self._run_action(connection, entity, record, action, now, f"{key}:{index}", extra, owner_before)
                continue
            try:
                with savepoint(connection):
                    self._run_action(connection, entity, record, action, now, f"{key}:{index}", extra, owner_before)
            except Exception as exc:  # e.g. a validation rule refusing the change: visible in the timeline
                append_event(connection, self.schema, entity=entity, record_id=record["id"], kind="action_failed",
                             actor_id=None, at=now, data={"action": type(action).__name__, "timer": key,
                                                          "error": f"{type(exc).__name__}: {exc}"[:1000]})

    def _run_action(self, connection: sa.Connection, entity: str, record: dict[str, Any], action: TimeAction,
                    now: dt.datetime, key: str, extra: Mapping[str, Any], owner_id: int | None) -> None:
        records = self.runtime.records
        if isinstance(action, NotifyStep):
            ahead = self._ahead(connection)
            seen: dict[int, Any] = ahead.users if ahead is not None else {}
            context = {"record": record, "now": now, "url": f"{self.base_url}/{entity}/{record['id']}",
                       **people_context(connection, self.schema, owner_id, seen), **extra}
            enqueue_notification(connection, self.schema, self.model, channel=action.channel,
                                 template=action.template, to=action.to, owner_id=owner_id, context=context,
                                 key=key, now=now, entity=entity, record_id=record["id"], seen=seen)
        elif isinstance(action, SetStep):
            records.update(entity, record["id"], dict(action.values), actor=SYSTEM, within=connection, origin="timer")
        elif isinstance(action, TagStep):
            current = list(record.get(action.field) or [])
            records.update(entity, record["id"], {action.field: current + [t for t in action.add if t not in current]},
                           actor=SYSTEM, within=connection, origin="timer")
        elif isinstance(action, ReassignStep):
            self._reassign(connection, entity, record, action, now)
        elif isinstance(action, CreateStep):
            values = {action.link: record["id"], **dict(action.values)}
            if record.get("owner") is not None:
                values["owner"] = record["owner"]
            records.create(action.entity, values, actor=SYSTEM, within=connection, origin="timer")

    def _reassign(self, connection: sa.Connection, entity: str, record: dict[str, Any], action: ReassignStep,
                  now: dt.datetime) -> None:
        """To the named backup when active and not on leave, else to the owner's manager."""
        users = self.schema.users
        target = None
        if action.backup:
            target = connection.execute(sa.select(users.c.id).where(
                users.c.username == action.backup, users.c.is_active.is_(True), users.c.on_leave.is_(False))).scalar()
        if target is None and record.get("owner") is not None:
            target = connection.execute(sa.select(users.c.manager_id).where(users.c.id == record["owner"])).scalar()
            if target is not None and not connection.execute(sa.select(users.c.is_active).where(
                    users.c.id == target)).scalar():
                target = None
        if target is None or target == record.get("owner"):
            append_event(connection, self.schema, entity=entity, record_id=record["id"], kind="reassign_skipped",
                         actor_id=None, at=now, data={"reason": "no active backup or manager to take it"})
            return
        self.runtime.records.update(entity, record["id"], {"owner": target}, actor=SYSTEM, within=connection,
                                    origin="timer")

    # -- reading ahead for a batch of timers -----------------------------------------------
    @contextlib.contextmanager
    def batch(self, connection: sa.Connection, timers: list[DueTimer], now: dt.datetime) -> Iterator[None]:
        """Read what these timers' handlers will read — their clocks, records, owners and
        managers — in a few statements, instead of a few per timer (on PostgreSQL each is a
        round trip); the worker fires the batch inside this block."""
        ahead = _ReadAhead(connection, {}, {}, {})
        wanted: dict[tuple[str, str], set[int]] = {}
        for timer in timers:
            spec: Any = (self._slas.get(str(timer.payload.get("policy"))) if timer.kind == "sla"
                         else self._cadences.get(str(timer.payload.get("cadence"))))
            if spec is not None and timer.record_id is not None:
                wanted.setdefault((timer.kind, spec.entity), set()).add(timer.record_id)
                ahead.clocks[(timer.kind, spec.entity, timer.record_id, spec.name)] = None
        records = self.runtime.records
        for (kind, entity), ids in wanted.items():
            for (record_id, name), clock in load_clocks(connection, self.schema, kind, entity, ids).items():
                if (kind, entity, record_id, name) in ahead.clocks:
                    ahead.clocks[(kind, entity, record_id, name)] = clock
        by_entity: dict[str, set[int]] = {}
        for (_, entity), ids in wanted.items():
            by_entity.setdefault(entity, set()).update(ids)
        for entity, ids in by_entity.items():
            found = records.find_many(connection, entity, ids)
            ahead.records.update({(entity, record_id): found.get(record_id) for record_id in ids})
        owners = {record["owner"] for record in ahead.records.values() if record and record.get("owner")}
        self._read_users(connection, owners, ahead.users)
        self._read_users(connection, {row.manager_id for row in ahead.users.values() if row is not None}, ahead.users)
        token = _read_ahead.set(ahead)
        try:
            yield
        finally:
            _read_ahead.reset(token)

    def _read_users(self, connection: sa.Connection, ids: set[int | None], into: dict[int, Any]) -> None:
        missing = sorted(user_id for user_id in ids if user_id is not None and user_id not in into)
        if missing:
            users = self.schema.users
            found = {row.id: row for row in connection.execute(sa.select(users).where(users.c.id.in_(missing)))}
            into.update({user_id: found.get(user_id) for user_id in missing})

    @staticmethod
    def _ahead(connection: sa.Connection) -> _ReadAhead | None:
        ahead = _read_ahead.get()
        return ahead if ahead is not None and ahead.connection is connection else None

    def _clock(self, connection: sa.Connection, kind: str, entity: str, record_id: int,
               name: str) -> ClockSnapshot | None:
        ahead = self._ahead(connection)
        if ahead is not None and (kind, entity, record_id, name) in ahead.clocks:
            return ahead.clocks[(kind, entity, record_id, name)]
        return load_clock(connection, self.schema, kind, entity, record_id, name)

    def _forget_clock(self, connection: sa.Connection, kind: str, entity: str, record_id: int, name: str) -> None:
        ahead = self._ahead(connection)
        if ahead is not None:
            ahead.clocks.pop((kind, entity, record_id, name), None)

    def _record(self, connection: sa.Connection, entity_name: str, record_id: int) -> dict[str, Any] | None:
        ahead = self._ahead(connection)
        if ahead is not None and (entity_name, record_id) in ahead.records:
            record = ahead.records[(entity_name, record_id)]
            return None if record is None else dict(record)
        return self.runtime.records.find(connection, entity_name, record_id)


# --------------------------------------------------------------------------- wiring

def install_timekeeping(runtime: Runtime, *, base_url: str | None = None) -> Timekeeping:
    """Register the SLA/cadence observer on the runtime's RecordService (idempotent)."""
    import os

    existing = timekeeping_of(runtime)
    if existing is not None:
        return existing
    keeper = Timekeeping(runtime, base_url=base_url if base_url is not None else os.environ.get("CRM_BASE_URL", ""))
    if keeper.model.slas or keeper.model.cadences:
        runtime.records.observers.append(keeper)
    else:
        runtime.__dict__["_timekeeping"] = keeper
    return keeper


def timekeeping_of(runtime: Any) -> Timekeeping | None:
    found = next((o for o in runtime.records.observers if isinstance(o, Timekeeping)), None)
    return found or runtime.__dict__.get("_timekeeping")


WORKER_ROLES = ("all", "timers", "outbox")


def build_worker(runtime: Runtime, *, environ: Mapping[str, str] | None = None,
                 name: str | None = None, extra_handlers: Mapping[str, Any] | None = None,
                 role: str = "all") -> Any:
    """A Worker with the SLA and cadence handlers, the channel deliverer, blueprint retries and jobs.
    `role` splits the work between processes: "timers" fires timers and runs jobs, "outbox"
    only delivers notifications, "all" does both."""
    if role not in WORKER_ROLES:
        raise ValueError(f"unknown worker role '{role}': choose one of {', '.join(WORKER_ROLES)}")
    from engine.runtime.background.delivery import OutboxDeliverer, next_attempt_for
    from engine.runtime.background.jobs import scheduled_jobs
    from engine.runtime.background.worker import Worker

    keeper = install_timekeeping(runtime)
    timers, outbox = role in ("all", "timers"), role in ("all", "outbox")
    deliver = OutboxDeliverer(runtime.model, runtime.clock.now, environ=environ) if outbox else None
    return Worker(runtime, handlers={**keeper.handlers, **(extra_handlers or {})}, deliver=deliver,
                  next_attempt=next_attempt_for(runtime.model), jobs=scheduled_jobs(runtime) if timers else (),
                  name=name, fire_timers=timers)


def start_background_worker(runtime: Runtime, *, interval: float = 1.0,
                            environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Tick the worker in this process (APScheduler BackgroundScheduler); returns a function that stops it."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from engine.runtime.background.worker import quiet_busy_ticks

    worker = build_worker(runtime, environ=environ)
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

"""Cadences in the engine: runs started and stopped by every write; their steps fired once.

`CadenceClocks` is a RecordService write observer. On each write it asks the pure deciders
(engine/rules/cadences.py) what happens to each cadence run of the record — and whether a
write of a related record ("the customer replied") stops another record's run — then, in
the write's own transaction, schedules or cancels the step timers and updates the
crm_clocks row. Its timer handler ("cadence") re-checks the run at fire time and runs the
step's actions through the one action executor; the last step completes the run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, Metamodel
from engine.metamodel.cadences import CadenceSpec
from engine.rules.cadences import cadence_prefix, decide_cadence, reply_stops, step_offset
from engine.rules.calendars import BusinessCalendar
from engine.rules.clocks import ClockDecision, ClockSnapshot, Move, view_stop_reason
from engine.rules.expressions import Evaluator
from engine.rules.rules import Change, Origin
from engine.rules.timers import DueTimer, TimerRequest
from engine.runtime.automation.actions import ActionExecutor
from engine.runtime.automation.clocks import ClockStore, load_clock
from engine.runtime.background.timers import BatchedHandler, SqlTimerStore, TimerHandler
from engine.runtime.records.actors import Actor
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.storage.database import Database
from engine.runtime.storage.times import as_utc
from engine.rules.clocks import ClockState


class CadenceClocks:
    """The write observer and timer handler for the blueprint's cadences."""

    def __init__(self, model: Metamodel, db: Database, clocks: ClockStore, timers: SqlTimerStore,
                 calendars: Mapping[str, BusinessCalendar], evaluator: Evaluator, executor: ActionExecutor) -> None:
        self.model = model
        self.db = db
        self.clocks = clocks
        self.timers = timers
        self.calendars = calendars
        self.evaluator = evaluator
        self.executor = executor
        clocks.register("cadence", self._clock_of)
        self.handlers: dict[str, TimerHandler] = {"cadence": BatchedHandler(self.fire, clocks.batch)}

    def _spec(self, name: object) -> CadenceSpec | None:
        return next((spec for spec in self.model.cadences if spec.name == name), None)

    def _clock_of(self, timer: DueTimer) -> tuple[str, str] | None:
        spec = self._spec(timer.payload.get("cadence"))
        return (spec.entity, spec.name) if spec is not None else None

    # -- the write observer -----------------------------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        return {}

    def wants_view(self, entity: EntitySpec, record: Mapping[str, Any], actor: Actor) -> bool:
        """Whether `actor` opening `record` would stop one of its runs (a `viewed_by` stop)."""
        watching = [spec for spec in self.model.cadences
                    if spec.entity == entity.name and view_stop_reason(spec.stops, record, actor.id)]
        if not watching:
            return False
        with self.db.read() as connection:
            for spec in watching:
                clock = load_clock(connection, self.clocks.schema, "cadence", entity.name, int(record["id"]),
                                   spec.name)
                if clock is not None and clock.state == ClockState.RUNNING:
                    return True
        return False

    def after_write(self, context: WriteContext) -> None:
        """Start, restart or stop this record's cadence runs, and stop the runs a reply ends."""
        if context.is_history and context.change is Change.CREATED and context.origin is Origin.IMPORT:
            return  # a record imported as history is no new inquiry waiting for an answer: no cadences start
        entity, after = context.entity.name, context.after
        record_id = int(after["id"])
        viewer = context.actor.id if context.change is Change.VIEWED else None
        for cadence in self.model.cadences:
            if cadence.entity == entity:
                current = None if context.change is Change.CREATED else load_clock(
                    context.connection, self.clocks.schema, "cadence", entity, record_id, cadence.name)
                decision = decide_cadence(cadence, current, context.change, context.before, after, context.now,
                                          self.evaluator.evaluate, viewer=viewer)
                if decision.move is not Move.NONE:
                    self._apply(context.connection, cadence, record_id, current, decision, context.now)
            target = reply_stops(cadence, entity, context.change, context.before, after, self.evaluator.evaluate)
            if target is not None:
                self._stop(context.connection, cadence, target, context.now, f"customer replied ({entity})")

    def _apply(self, connection: sa.Connection, cadence: CadenceSpec, record_id: int,
               current: ClockSnapshot | None, decision: ClockDecision, now: dt.datetime) -> None:
        if current is not None and decision.move in (Move.RESTART, Move.STOP, Move.CANCEL):
            self.timers.cancel(connection, cadence_prefix(cadence.name, cadence.entity, record_id, current.started_at),
                               cadence.entity, record_id)
        clock = decision.clock or ClockSnapshot(now, ClockState.CANCELLED)
        next_due = None
        if decision.move in (Move.START, Move.RESTART):
            next_due = self._schedule(connection, cadence, record_id, clock.started_at)
        self.clocks.save(connection, "cadence", cadence.entity, record_id, cadence.name, clock, now,
                         due_at=next_due, reason=decision.reason)
        append_event(connection, self.clocks.schema, entity=cadence.entity, record_id=record_id,
                     kind=EventKind(f"cadence_{decision.move.value}"), actor_id=None, at=now,
                     data={"cadence": cadence.name, "reason": decision.reason})

    def _schedule(self, connection: sa.Connection, cadence: CadenceSpec, record_id: int,
                  started_at: dt.datetime) -> dt.datetime | None:
        calendar = self.calendars.get(cadence.calendar) if cadence.business_time and cadence.calendar else None
        prefix = cadence_prefix(cadence.name, cadence.entity, record_id, started_at)
        requests = []
        for index, step in enumerate(cadence.steps):
            offset = step_offset(step.after, calendar.working_day_length if calendar else dt.timedelta(days=1))
            due = calendar.add_business_time(started_at, offset) if calendar else started_at + offset
            requests.append(TimerRequest(
                "cadence", f"{prefix}{index}:{step.name}", due, cadence.entity, record_id,
                {"cadence": cadence.name, "step": step.name, "index": index, "cycle": started_at.isoformat()}))
        self.timers.schedule(connection, *requests)
        return requests[0].due_at if requests else None

    def _stop(self, connection: sa.Connection, cadence: CadenceSpec, record_id: int, now: dt.datetime,
              reason: str) -> None:
        current = load_clock(connection, self.clocks.schema, "cadence", cadence.entity, record_id, cadence.name)
        if current is not None and current.state == ClockState.RUNNING:
            self._apply(connection, cadence, record_id, current,
                        ClockDecision(Move.STOP, ClockSnapshot(current.started_at, ClockState.STOPPED), reason), now)

    # -- the timer handler ----------------------------------------------------------------------
    def fire(self, connection: sa.Connection, timer: DueTimer, now: dt.datetime) -> None:
        """A cadence step came due: run its actions unless the run stopped; the last step completes it."""
        cadence = self._spec(timer.payload.get("cadence"))
        if cadence is None or timer.record_id is None:
            return
        clock = self.clocks.load(connection, "cadence", cadence.entity, timer.record_id, cadence.name)
        if clock is None or clock.state != ClockState.RUNNING or clock.started_at.isoformat() != timer.payload.get("cycle"):
            return
        record = self.clocks.record(connection, cadence.entity, timer.record_id)
        if record is None:
            return
        index = int(timer.payload["index"])
        step = cadence.steps[index]
        append_event(connection, self.clocks.schema, entity=cadence.entity, record_id=timer.record_id,
                     kind=EventKind.CADENCE_STEP, actor_id=None, at=now,
                     data={"cadence": cadence.name, "step": step.name})
        self.executor.run(connection, cadence.entity, record, step.actions, now, key=timer.key,
                          context={"cadence": {"name": cadence.name, "step": step.name}},
                          seen=self.clocks.users_seen(connection))
        if index == len(cadence.steps) - 1:
            later = self.clocks.load(connection, "cadence", cadence.entity, timer.record_id, cadence.name)
            if later is not None and later.state == ClockState.RUNNING and later.started_at == clock.started_at:
                self.clocks.save(connection, "cadence", cadence.entity, timer.record_id, cadence.name,
                                 ClockSnapshot(clock.started_at, ClockState.DONE), now, reason="all steps done")

    # -- the record page ------------------------------------------------------------------------
    def summary(self, entity: str, record_id: int) -> list[dict[str, Any]]:
        """Every cadence run of one record: state, why it stopped, and each step's due time and status."""
        clocks, timers = self.clocks.schema.clocks, self.clocks.schema.timers
        with self.db.read() as connection:
            rows = connection.execute(sa.select(clocks).where(clocks.c.kind == "cadence", clocks.c.entity == entity,
                                                              clocks.c.record_id == record_id)
                                      .order_by(clocks.c.name)).all()
            result = []
            for row in rows:
                prefix = cadence_prefix(row.name, entity, record_id, as_utc(row.started_at))
                steps = connection.execute(sa.select(timers.c.key, timers.c.due_at, timers.c.status, timers.c.payload)
                                           .where(timers.c.key.like(prefix.replace("_", "\\_") + "%", escape="\\"))
                                           .order_by(timers.c.due_at)).all()
                result.append({"cadence": row.name, "state": row.state, "started_at": as_utc(row.started_at),
                               "stopped_at": as_utc(row.stopped_at), "reason": row.reason or "",
                               "steps": [{"step": (step.payload or {}).get("step"), "due_at": as_utc(step.due_at),
                                          "status": step.status} for step in steps]})
        return result

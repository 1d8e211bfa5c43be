"""SLA clocks in the engine: started, moved and stopped by every write; their checkpoints fired once.

`SlaClocks` is a RecordService write observer. On each write it asks the pure decider
(engine/rules/sla.py `decide_sla`) what happens to each SLA clock of the record, then — in
the write's own transaction — schedules, moves or cancels the checkpoint timers and
updates the crm_clocks row. A rolled-back write leaves no timer and no message.

Its timer handler ("sla") re-checks the clock at fire time, records the warning, breach or
escalation, and runs the blueprint's actions for it through the one action executor, in the
timer's transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, Metamodel
from engine.metamodel.sla import SlaSpec
from engine.rules.calendars import BusinessCalendar
from engine.rules.clocks import ClockDecision, ClockSnapshot, Move, view_stop_reason
from engine.rules.expressions import Evaluator
from engine.rules.rules import Change, Origin
from engine.rules.sla import (Checkpoint, SlaStatus, build_policy, checkpoint_key_prefix, checkpoint_keys,
                              decide_sla, first_checkpoint, sla_checkpoints, sla_state)
from engine.rules.timers import DueTimer, TimerRequest
from engine.runtime.automation.actions import ActionExecutor
from engine.runtime.automation.clocks import ClockStore, load_clock, pauses_from_json
from engine.runtime.background.timers import BatchedHandler, SqlTimerStore, TimerHandler
from engine.runtime.records.actors import Actor
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.storage.database import Database
from engine.runtime.storage.times import as_utc
from engine.rules.clocks import ClockState

log = logging.getLogger(__name__)
_CHECKPOINT_EVENTS = {"warning": EventKind.SLA_WARNING, "breach": EventKind.SLA_BREACHED,
                      "escalation": EventKind.SLA_ESCALATED}


class SlaClocks:
    """The write observer and timer handler for the blueprint's SLA policies."""

    def __init__(self, model: Metamodel, db: Database, clocks: ClockStore, timers: SqlTimerStore,
                 calendars: Mapping[str, BusinessCalendar], evaluator: Evaluator, executor: ActionExecutor) -> None:
        self.model = model
        self.db = db
        self.clocks = clocks
        self.timers = timers
        self.calendars = calendars
        self.evaluator = evaluator
        self.executor = executor
        self._policies = {spec.name: build_policy(spec, self.calendar(spec)) for spec in model.slas}
        clocks.register("sla", self._clock_of)
        self.handlers: dict[str, TimerHandler] = {"sla": BatchedHandler(self.fire, clocks.batch)}

    def calendar(self, spec: SlaSpec) -> BusinessCalendar | None:
        return self.calendars.get(spec.calendar) if spec.calendar else None

    def _clock_of(self, timer: DueTimer) -> tuple[str, str] | None:
        name = str(timer.payload.get("policy"))
        return (self.model.sla(name).entity, name) if any(spec.name == name for spec in self.model.slas) else None

    def _spec(self, name: object) -> SlaSpec | None:
        return next((spec for spec in self.model.slas if spec.name == name), None)

    # -- the write observer -----------------------------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        return {}

    def wants_view(self, entity: EntitySpec, record: Mapping[str, Any], actor: Actor) -> bool:
        """Whether `actor` opening `record` would stop one of its clocks (a `viewed_by` stop)."""
        watching = [spec for spec in self.model.slas
                    if spec.entity == entity.name and view_stop_reason(spec.stops, record, actor.id)]
        if not watching:
            return False
        with self.db.read() as connection:
            for spec in watching:
                clock = load_clock(connection, self.clocks.schema, "sla", entity.name, int(record["id"]), spec.name)
                if clock is not None and clock.is_active:
                    return True
        return False

    def after_write(self, context: WriteContext) -> None:
        """Start, move, pause or stop this record's SLA clocks."""
        if context.is_history and context.change is Change.CREATED and context.origin is Origin.IMPORT:
            return  # a record imported as history is no new inquiry waiting for an answer: no SLA clocks start
        entity, after = context.entity.name, context.after
        record_id = int(after["id"])
        self.clocks.forget_record(context.connection, entity, record_id)
        viewer = context.actor.id if context.change is Change.VIEWED else None
        for spec in self.model.slas:
            if spec.entity != entity:
                continue
            current = None if context.change is Change.CREATED else load_clock(  # a new record has no clocks yet
                context.connection, self.clocks.schema, "sla", entity, record_id, spec.name)
            decision = decide_sla(spec, current, context.change, context.before, after, context.now,
                                  self.evaluator.evaluate, viewer=viewer)
            if decision.move is not Move.NONE:
                self._apply(context.connection, spec, record_id, current, decision, context.now)

    def _apply(self, connection: sa.Connection, spec: SlaSpec, record_id: int, current: ClockSnapshot | None,
               decision: ClockDecision, now: dt.datetime) -> None:
        move, clock = decision.move, decision.clock
        self.clocks.forget(connection, "sla", spec.entity, record_id, spec.name)
        if current is not None and move in (Move.RESTART, Move.PAUSE, Move.STOP, Move.CANCEL):
            self.timers.cancel(connection, checkpoint_key_prefix(spec.name, spec.entity, record_id,
                                                                 current.started_at), spec.entity, record_id)
        if clock is None:  # the record is gone
            table = self.clocks.schema.clocks
            connection.execute(table.delete().where(table.c.kind == "sla", table.c.entity == spec.entity,
                                                    table.c.record_id == record_id, table.c.name == spec.name))
            return
        due_at = None
        if clock.state == ClockState.RUNNING and move in (Move.START, Move.RESTART, Move.RESUME, Move.RETIER):
            due_at = self._schedule(connection, spec, record_id, clock, fresh=move in (Move.START, Move.RESTART))
        met = self._met(spec, clock, now) if move is Move.STOP else None
        self.clocks.save(connection, "sla", spec.entity, record_id, spec.name, clock, now, due_at=due_at,
                         reason=decision.reason, met=met)
        if move is Move.RESTART and spec.starts.kind == "updated":
            return  # "silent overdue" restarts on every change; the change itself is the timeline entry
        append_event(connection, self.clocks.schema, entity=spec.entity, record_id=record_id,
                     kind=EventKind(f"sla_{move.value}"), actor_id=None, at=now,
                     data={"policy": spec.name, "reason": decision.reason,
                           "due_at": due_at.isoformat() if due_at else None, **({"met": met} if met is not None else {})})

    def _met(self, spec: SlaSpec, clock: ClockSnapshot, now: dt.datetime) -> bool:
        """Whether a clock stopping now beat its target: no breach noted, and — should the worker
        not have fired the breach yet — not past its due time either (the timeliness tables read it)."""
        if clock.breached_at is not None:
            return False
        status = sla_state(now, self._policies[spec.name], clock.started_at, clock.tier, clock.pauses,
                           self.calendar(spec), stopped_at=now)
        return status.met is not False

    def _schedule(self, connection: sa.Connection, spec: SlaSpec, record_id: int, clock: ClockSnapshot, *,
                  fresh: bool) -> dt.datetime | None:
        """Schedule the clock's next checkpoint that has not fired in this cycle (on a new cycle,
        the first); firing it schedules the one after (`_chain`). One pending timer per running
        clock, not one per warning, breach and escalation: fewer rows in every write. Returns
        the breach's due time."""
        if fresh:  # nothing of the cycle has fired: its first checkpoint is next
            first, breach = first_checkpoint(self._policies[spec.name], clock.started_at, clock.tier, clock.pauses,
                                             self.calendar(spec))
            if first is not None:
                key, = checkpoint_keys(spec.name, spec.entity, record_id, clock.started_at, (first,))
                self._schedule_one(connection, spec, record_id, clock, key, first)
            return breach
        checkpoints: list[Checkpoint] = sla_checkpoints(self._policies[spec.name], clock.started_at, clock.tier,
                                                        clock.pauses, self.calendar(spec))
        keys = checkpoint_keys(spec.name, spec.entity, record_id, clock.started_at, checkpoints)
        fired = self.timers.fired_keys(
            connection, checkpoint_key_prefix(spec.name, spec.entity, record_id, clock.started_at),
            spec.entity, record_id)
        upcoming = next(((key, checkpoint) for key, checkpoint in zip(keys, checkpoints) if key not in fired), None)
        if upcoming is not None:
            self._schedule_one(connection, spec, record_id, clock, *upcoming)
        return next((c.due_at for c in checkpoints if c.kind.value == "breach"), None)

    def _schedule_one(self, connection: sa.Connection, spec: SlaSpec, record_id: int, clock: ClockSnapshot,
                      key: str, checkpoint: Checkpoint) -> None:
        self.timers.schedule(connection, TimerRequest(
            "sla", key, checkpoint.due_at, spec.entity, record_id,
            {"policy": spec.name, "checkpoint": checkpoint.name, "cycle": clock.started_at.isoformat()}))

    def _chain(self, connection: sa.Connection, spec: SlaSpec, record_id: int, clock: ClockSnapshot,
               fired: str) -> None:
        """The checkpoint after `fired` (warning-50 → warning-80 → breach-100 → escalations), scheduled
        when `fired` fires; if it is already due (the worker was down) it fires in the same tick."""
        checkpoints = sla_checkpoints(self._policies[spec.name], clock.started_at, clock.tier, clock.pauses,
                                      self.calendar(spec))
        names = [checkpoint.name for checkpoint in checkpoints]
        if fired in names and names.index(fired) + 1 < len(checkpoints):
            following = checkpoints[names.index(fired) + 1]
            key, = checkpoint_keys(spec.name, spec.entity, record_id, clock.started_at, (following,))
            self._schedule_one(connection, spec, record_id, clock, key, following)

    # -- the timer handler ----------------------------------------------------------------------
    def fire(self, connection: sa.Connection, timer: DueTimer, now: dt.datetime) -> None:
        """An SLA checkpoint came due: re-check the clock, then record it and run its actions once."""
        spec = self._spec(timer.payload.get("policy"))
        if spec is None or timer.record_id is None:
            return  # the policy left the blueprint; nothing to do
        clock = self.clocks.load(connection, "sla", spec.entity, timer.record_id, spec.name)
        if clock is None or clock.state != ClockState.RUNNING or not _same_cycle(clock, timer.payload.get("cycle")):
            return  # paused, stopped or restarted since it was scheduled
        # the next checkpoint first: actions below that restart or stop the clock cancel it with the cycle
        self._chain(connection, spec, timer.record_id, clock, str(timer.payload["checkpoint"]))
        kind, _, percent = str(timer.payload["checkpoint"]).partition("-")
        status = sla_state(now, self._policies[spec.name], clock.started_at, clock.tier, clock.pauses,
                           self.calendar(spec))
        if status.elapsed + dt.timedelta(seconds=1) < status.target * int(percent) / 100:
            log.warning("SLA timer %s fired before its checkpoint; skipped", timer.key)
            return
        record = self.clocks.record(connection, spec.entity, timer.record_id)
        if record is None:
            return
        if kind == "breach":
            self.clocks.mark_breached(connection, spec.entity, timer.record_id, spec.name, clock, now)
        # a warning that comes due only after the breach (the worker was down) is recorded, not sent
        late = kind == "warning" and status.elapsed >= status.target
        append_event(connection, self.clocks.schema, entity=spec.entity, record_id=timer.record_id,
                     kind=_CHECKPOINT_EVENTS[kind], actor_id=None, at=now,
                     data={"policy": spec.name, "checkpoint": timer.payload["checkpoint"],
                           "due_at": status.due_at.isoformat() if status.due_at else None,
                           **({"skipped": "already breached"} if late else {})})
        if late:
            return
        actions = {"warning": spec.on_warning, "breach": spec.on_breach, "escalation": spec.on_escalation}[kind]
        self.executor.run(connection, spec.entity, record, actions, now, key=timer.key,
                          context={"sla": _sla_context(spec, status, percent)},
                          seen=self.clocks.users_seen(connection))

    # -- the record page ------------------------------------------------------------------------
    def summary(self, entity: str, record_id: int, now: dt.datetime) -> list[dict[str, Any]]:
        """Every SLA clock of one record: state, due time, what is left or how late."""
        table = self.clocks.schema.clocks
        with self.db.read() as connection:
            rows = connection.execute(sa.select(table).where(table.c.kind == "sla", table.c.entity == entity,
                                                             table.c.record_id == record_id)
                                      .order_by(table.c.name)).all()
        result = []
        for row in rows:
            spec = self._spec(row.name)
            if spec is None or row.state == ClockState.CANCELLED:
                continue
            started = as_utc(row.started_at)
            assert started is not None
            stopped = as_utc(row.stopped_at) if row.state == ClockState.STOPPED else None
            status = sla_state(now, self._policies[spec.name], started, row.tier, pauses_from_json(row.pauses),
                               self.calendar(spec), stopped_at=stopped)
            result.append({"policy": spec.name, "label": spec.label, "tier": row.tier, "state": status.state.value,
                           "due_at": status.due_at, "remaining": status.remaining, "target": status.target,
                           "percent": round(status.percent_used), "started_at": started,
                           "breached_at": as_utc(row.breached_at), "met": status.met, "reason": row.reason or ""})
        return result


def _sla_context(spec: SlaSpec, status: SlaStatus, percent: str) -> dict[str, Any]:
    """What a checkpoint's messages may say about the SLA: `{{ sla.remaining | duration }}`."""
    return {"policy": spec.name, "label": spec.label.text("zh"), "state": status.state.value,
            "due_at": status.due_at, "remaining": status.remaining, "target": status.target,
            "elapsed": status.elapsed, "percent": int(percent)}


def _same_cycle(clock: ClockSnapshot, cycle: object) -> bool:
    """Whether a timer's cycle (its clock's start as scheduled) is the clock's current start —
    compared as instants: the start may have been written with another UTC offset than it is read."""
    if not isinstance(cycle, str):
        return False
    if cycle == clock.started_at.isoformat():
        return True
    try:
        return dt.datetime.fromisoformat(cycle) == clock.started_at
    except (TypeError, ValueError):
        return False

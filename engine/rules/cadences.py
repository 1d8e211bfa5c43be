"""Cadences as pure decisions: what a write does to a record's run of a cadence, which related
write ("the customer replied") stops it, and when each step is due. The runtime applies the
decision (timer rows, the crm_clocks row, events) in the write's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.metamodel.cadences import CadenceSpec
from engine.metamodel.clocks import ClockTrigger
from engine.metamodel.durations import DurationSpec
from engine.rules.clocks import (ClockDecision, ClockSnapshot, Evaluate, Move, on_view, stop_reason, trigger_fired,
                                 trigger_holds, truth)
from engine.rules.clocks import ClockState


def decide_cadence(spec: CadenceSpec, current: ClockSnapshot | None, change: str, before: Mapping[str, Any] | None,
                   after: Mapping[str, Any], now: dt.datetime, evaluate: Evaluate, *,
                   viewer: int | None = None) -> ClockDecision:
    """What one write (or a view, as in `decide_sla`) does to one record's run of a cadence."""
    running = current is not None and current.state == ClockState.RUNNING
    if change == "viewed":
        return on_view(spec.stops, current, running, after, viewer)
    if change == "deleted":
        return ClockDecision(Move.CANCEL, None, "record deleted") if running else ClockDecision(Move.NONE, current)
    stopped = stop_reason(spec.stops, before, after, evaluate)
    fired = trigger_fired(spec.starts, change, before, after)
    if current is not None and running:
        if stopped is not None:
            return ClockDecision(Move.STOP, replace(current, state=ClockState.STOPPED), stopped)
        if spec.restart_on_update and change == "updated":
            return ClockDecision(Move.RESTART, ClockSnapshot(now, ClockState.RUNNING), "record updated")
        return ClockDecision(Move.NONE, current)
    if stopped is not None and not fired:
        return ClockDecision(Move.NONE, current)
    if fired:
        return ClockDecision(Move.START, ClockSnapshot(now, ClockState.RUNNING), f"started: {_describe(spec.starts)}")
    if (current is not None and current.state == ClockState.DONE and spec.restart_on_update and change == "updated"
            and trigger_holds(spec.starts, after)):
        return ClockDecision(Move.RESTART, ClockSnapshot(now, ClockState.RUNNING), "record updated")
    return ClockDecision(Move.NONE, current)


def reply_stops(spec: CadenceSpec, related_entity: str, change: str, before: Mapping[str, Any] | None,
                after: Mapping[str, Any], evaluate: Evaluate) -> int | None:
    """The id of the record whose cadence a write of a related record stops ("customer replied"), or None."""
    if change in ("deleted", "viewed"):
        return None
    for stop in spec.stops:
        if stop.kind != "replied" or stop.entity != related_entity:
            continue
        target = after.get(stop.field or "")
        if target is None:
            continue
        holds = truth(stop.expression, after, evaluate, True)
        held = before is not None and truth(stop.expression, before, evaluate, True)
        if holds and not (held and before is not None and before.get(stop.field or "") == target):
            return int(target)
    return None


def step_offset(after: DurationSpec, working_day: dt.timedelta) -> dt.timedelta:
    """A step's delay as counted time: fixed part plus business days of `working_day` each."""
    return after.fixed + after.business_days * working_day


def _describe(trigger: ClockTrigger) -> str:
    if trigger.kind == "stage_entered":
        return f"{trigger.field} entered {trigger.value}"
    if trigger.kind == "field_set":
        return f"{trigger.field} set"
    return trigger.kind


def cadence_prefix(name: str, entity: str, record_id: int, started_at: dt.datetime | None = None) -> str:
    """Timer-key prefix of one record's cadence runs (all, or the run that started at `started_at`)."""
    prefix = f"cadence:{name}:{entity}:{record_id}:"
    return prefix if started_at is None else f"{prefix}{started_at.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}:"

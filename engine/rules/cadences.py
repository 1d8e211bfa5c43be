"""Per-record clocks as pure decisions: what a write does to an SLA clock or a cadence.

Given the blueprint's spec, the clock as stored, and the record before and after a write,
`decide_sla` and `decide_cadence` return a `ClockDecision` — start, restart, pause,
resume, re-tier, stop, cancel or nothing — with the clock's new state and the reason. The
runtime applies it (timer rows, the crm_clocks row, events) in the write's transaction.
No database, no clock: everything comes in as arguments, so these are tested in bulk.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.metamodel.cadences import CadenceSpec
from engine.metamodel.clocks import ClockTrigger, StopCondition
from engine.metamodel.durations import DurationSpec
from engine.metamodel.expressions import Expression
from engine.metamodel.sla import SlaSpec
from engine.rules.sla import Pause

Evaluate = Callable[[Expression, Mapping[str, Any]], Any]
ACTIVE = ("running", "paused")


class Move(enum.Enum):
    NONE = "none"
    START = "start"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    RETIER = "retier"
    STOP = "stop"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class ClockSnapshot:
    """One record's clock for one policy or cadence, as stored in crm_clocks."""

    started_at: dt.datetime
    state: str  # running | paused | stopped | cancelled | done
    tier: str | None = None
    pauses: tuple[Pause, ...] = ()
    breached_at: dt.datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE


@dataclass(frozen=True, slots=True)
class ClockDecision:
    move: Move
    clock: ClockSnapshot | None
    reason: str = ""


def _truth(expression: Expression | None, values: Mapping[str, Any], evaluate: Evaluate, default: bool) -> bool:
    if expression is None:
        return default
    try:
        return bool(evaluate(expression, values))
    except Exception:  # an expression that cannot be evaluated (e.g. a None in arithmetic) decides nothing
        return False


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == ()


def trigger_fired(trigger: ClockTrigger, change: str, before: Mapping[str, Any] | None,
                  after: Mapping[str, Any]) -> bool:
    """Whether this write is the start event itself (an edge: entered, set, assigned now)."""
    old = before or {}
    if trigger.kind == "created":
        return change == "created"
    if trigger.kind == "updated":
        return change in ("created", "updated")
    if trigger.kind == "assigned":
        return after.get("owner") is not None and (before is None or old.get("owner") != after.get("owner"))
    name = trigger.field or ""
    if trigger.kind == "stage_entered":
        return after.get(name) == trigger.value and (before is None or old.get(name) != trigger.value)
    return not _empty(after.get(name)) and (before is None or old.get(name) != after.get(name))


def trigger_holds(trigger: ClockTrigger, after: Mapping[str, Any]) -> bool:
    """Whether the start condition is true now (for a record that never had this clock)."""
    if trigger.kind in ("created", "updated"):
        return True
    if trigger.kind == "assigned":
        return after.get("owner") is not None
    if trigger.kind == "stage_entered":
        return after.get(trigger.field or "") == trigger.value
    return not _empty(after.get(trigger.field or ""))


def stop_reason(stops: Sequence[StopCondition], before: Mapping[str, Any] | None, after: Mapping[str, Any],
                evaluate: Evaluate) -> str | None:
    """The first stop condition met by `after` (as text for the record page), or None."""
    for stop in stops:
        name = stop.field or ""
        if stop.kind == "field_set" and not _empty(after.get(name)):
            return f"{name} set"
        if stop.kind == "status_in" and str(after.get(name)) in stop.values:
            return f"{name} is {after.get(name)}"
        if stop.kind == "when" and _truth(stop.expression, after, evaluate, False):
            return f"{stop.expression.source if stop.expression else 'condition'}"
        if stop.kind == "stage_changed" and before is not None and before.get(name) != after.get(name):
            return f"{name} changed to {after.get(name)}"
    return None


def view_stop_reason(stops: Sequence[StopCondition], record: Mapping[str, Any], viewer: int | None) -> str | None:
    """The `viewed_by` stop that user `viewer` opening `record` meets (as text), or None."""
    for stop in stops:
        if stop.kind != "viewed_by" or viewer is None:
            continue
        if stop.values == ("anyone",):
            return "viewed"
        if record.get("owner") is not None and record.get("owner") == viewer:
            return "viewed by the owner"
    return None


def _on_view(stops: Sequence[StopCondition], current: ClockSnapshot | None, is_active: bool,
             record: Mapping[str, Any], viewer: int | None) -> ClockDecision:
    """A view changes no field: it can only stop an active clock through a `viewed_by` stop."""
    reason = view_stop_reason(stops, record, viewer)
    if current is not None and is_active and reason is not None:
        return ClockDecision(Move.STOP, replace(current, state="stopped"), reason)
    return ClockDecision(Move.NONE, current)


def tier_of(spec: SlaSpec, record: Mapping[str, Any]) -> str | None:
    value = record.get(spec.tier) if spec.tier else None
    return None if value is None else str(value)


def has_target(spec: SlaSpec, tier: str | None) -> bool:
    return spec.default_target is not None or any(name == tier for name, _ in spec.targets)


def decide_sla(spec: SlaSpec, current: ClockSnapshot | None, change: str, before: Mapping[str, Any] | None,
               after: Mapping[str, Any], now: dt.datetime, evaluate: Evaluate, *,
               viewer: int | None = None) -> ClockDecision:
    """What one write (or, for change "viewed", user `viewer` opening the record) does to
    one record's clock for one SLA policy."""
    active = current is not None and current.is_active
    if change == "viewed":
        return _on_view(spec.stops, current, active, after, viewer)
    if change == "deleted":
        return ClockDecision(Move.CANCEL, None, "record deleted") if active else ClockDecision(Move.NONE, current)
    tier = tier_of(spec, after)
    applies = _truth(spec.applies_when, after, evaluate, True) and has_target(spec, tier)
    stopped = stop_reason(spec.stops, before, after, evaluate)
    paused = _truth(spec.pauses_when, after, evaluate, False)
    fired = trigger_fired(spec.starts, change, before, after)
    if current is not None and active:
        if stopped is not None:
            return ClockDecision(Move.STOP, replace(current, state="stopped"), stopped)
        if not applies:
            return ClockDecision(Move.CANCEL, replace(current, state="cancelled"), "no longer under this SLA")
        if fired and change != "created":
            return ClockDecision(Move.RESTART, _fresh(now, tier, paused), f"restarted: {spec.starts.kind}")
        if paused and current.state == "running":
            return ClockDecision(Move.PAUSE, replace(current, state="paused", pauses=(*current.pauses, Pause(now))),
                                 "paused")
        if not paused and current.state == "paused":
            pauses = tuple(Pause(p.start, now) if p.end is None else p for p in current.pauses)
            return ClockDecision(Move.RESUME, replace(current, state="running", pauses=pauses), "resumed")
        if tier != current.tier:
            return ClockDecision(Move.RETIER, replace(current, tier=tier), f"tier {current.tier} → {tier}")
        return ClockDecision(Move.NONE, current)
    if not applies or stopped is not None:
        return ClockDecision(Move.NONE, current)
    starts = trigger_holds(spec.starts, after) if current is None else fired
    if starts:
        return ClockDecision(Move.START, _fresh(now, tier, paused), f"started: {spec.starts.kind}")
    return ClockDecision(Move.NONE, current)


def _fresh(now: dt.datetime, tier: str | None, paused: bool) -> ClockSnapshot:
    return ClockSnapshot(now, "paused" if paused else "running", tier, (Pause(now),) if paused else ())


def decide_cadence(spec: CadenceSpec, current: ClockSnapshot | None, change: str, before: Mapping[str, Any] | None,
                   after: Mapping[str, Any], now: dt.datetime, evaluate: Evaluate, *,
                   viewer: int | None = None) -> ClockDecision:
    """What one write (or a view, as in `decide_sla`) does to one record's run of a cadence."""
    running = current is not None and current.state == "running"
    if change == "viewed":
        return _on_view(spec.stops, current, running, after, viewer)
    if change == "deleted":
        return ClockDecision(Move.CANCEL, None, "record deleted") if running else ClockDecision(Move.NONE, current)
    stopped = stop_reason(spec.stops, before, after, evaluate)
    fired = trigger_fired(spec.starts, change, before, after)
    if current is not None and running:
        if stopped is not None:
            return ClockDecision(Move.STOP, replace(current, state="stopped"), stopped)
        if spec.restart_on_update and change == "updated":
            return ClockDecision(Move.RESTART, ClockSnapshot(now, "running"), "record updated")
        return ClockDecision(Move.NONE, current)
    if stopped is not None and not fired:
        return ClockDecision(Move.NONE, current)
    if fired:
        return ClockDecision(Move.START, ClockSnapshot(now, "running"), f"started: {_describe(spec.starts)}")
    if (current is not None and current.state == "done" and spec.restart_on_update and change == "updated"
            and trigger_holds(spec.starts, after)):
        return ClockDecision(Move.RESTART, ClockSnapshot(now, "running"), "record updated")
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
        holds = _truth(stop.expression, after, evaluate, True)
        held = before is not None and _truth(stop.expression, before, evaluate, True)
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

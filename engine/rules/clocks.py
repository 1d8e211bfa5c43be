"""Per-record clocks as pure decisions: the state an SLA clock or a cadence run is in, and what
a write does to it.

`ClockSnapshot` is one record's clock as stored (crm_clocks); `ClockDecision` is a move —
start, restart, pause, resume, re-tier, stop, cancel or nothing — with the new state and the
reason. The triggers and stop conditions here are shared by `decide_sla` (sla.py) and
`decide_cadence` (cadences.py). No database, no clock reads: everything comes in as arguments.
(`Clock`, the injected time source, is in time.py.)
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.metamodel.clocks import ClockTrigger, StopCondition
from engine.metamodel.expressions import Expression


Evaluate = Callable[[Expression, Mapping[str, Any]], Any]


class ClockState(enum.StrEnum):
    """Where one record's SLA clock or cadence run stands (the crm_clocks `state` column)."""

    RUNNING = "running"
    PAUSED = "paused"        # SLA only: "waiting for customer" does not count
    STOPPED = "stopped"      # a stop condition was met
    CANCELLED = "cancelled"  # no longer applies (or the record was deleted)
    DONE = "done"            # cadence only: every step ran


ACTIVE = (ClockState.RUNNING, ClockState.PAUSED)


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
    state: ClockState
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


def truth(expression: Expression | None, values: Mapping[str, Any], evaluate: Evaluate, default: bool) -> bool:
    if expression is None:
        return default
    try:
        return bool(evaluate(expression, values))
    except Exception:  # an expression that cannot be evaluated (e.g. a None in arithmetic) decides nothing
        return False


def is_blank(value: Any) -> bool:
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
    return not is_blank(after.get(name)) and (before is None or old.get(name) != after.get(name))


def trigger_holds(trigger: ClockTrigger, after: Mapping[str, Any]) -> bool:
    """Whether the start condition is true now (for a record that never had this clock)."""
    if trigger.kind in ("created", "updated"):
        return True
    if trigger.kind == "assigned":
        return after.get("owner") is not None
    if trigger.kind == "stage_entered":
        return after.get(trigger.field or "") == trigger.value
    return not is_blank(after.get(trigger.field or ""))


def stop_reason(stops: Sequence[StopCondition], before: Mapping[str, Any] | None, after: Mapping[str, Any],
                evaluate: Evaluate) -> str | None:
    """The first stop condition met by `after` (as text for the record page), or None."""
    for stop in stops:
        name = stop.field or ""
        if stop.kind == "field_set" and not is_blank(after.get(name)):
            return f"{name} set"
        if stop.kind == "status_in" and str(after.get(name)) in stop.values:
            return f"{name} is {after.get(name)}"
        if stop.kind == "when" and truth(stop.expression, after, evaluate, False):
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


def on_view(stops: Sequence[StopCondition], current: ClockSnapshot | None, is_active: bool,
             record: Mapping[str, Any], viewer: int | None) -> ClockDecision:
    """A view changes no field: it can only stop an active clock through a `viewed_by` stop."""
    reason = view_stop_reason(stops, record, viewer)
    if current is not None and is_active and reason is not None:
        return ClockDecision(Move.STOP, replace(current, state=ClockState.STOPPED), reason)
    return ClockDecision(Move.NONE, current)


def fresh_clock(now: dt.datetime, tier: str | None, paused: bool) -> ClockSnapshot:
    return ClockSnapshot(now, ClockState.PAUSED if paused else ClockState.RUNNING, tier, (Pause(now),) if paused else ())


@dataclass(frozen=True, slots=True)
class Pause:
    """A stretch during which the SLA clock stood still; `end` is None while still paused."""

    start: dt.datetime
    end: dt.datetime | None = None

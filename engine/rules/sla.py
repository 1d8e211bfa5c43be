"""SLA math: when a record's warnings and breach come due, and where its clock stands now.

An SLA policy gives each tier a target ("grade S: 2 h", "P1 ticket: 15 min"), warnings at
percentages of it (50 %, 80 %), optional escalations after the breach (150 %, 200 %), and
says whether the target counts business time (a `BusinessCalendar`) or wall-clock time.
Pauses ("waiting for customer") do not count: every paused stretch moves all later
checkpoints by the working time it swallowed.

These functions are pure. The worker turns checkpoints into timer rows keyed by
`checkpoint_key`: the key names the record, the policy, the clock's start and the
checkpoint, but not its due time, so rescheduling after a pause updates the same rows,
and a unique index on the key makes firing a checkpoint twice impossible. A restarted
clock (a new `started_at`, e.g. "silent overdue" restarting on every update) is a new
cycle with new keys.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from engine.metamodel.durations import DurationSpec
from engine.metamodel.sla import SlaSpec
from engine.rules.calendars import BusinessCalendar
from engine.rules.clocks import (ClockDecision, ClockSnapshot, Evaluate, Move, Pause, fresh_clock, on_view, stop_reason,
                                 trigger_fired, trigger_holds, truth)
from engine.rules.clocks import ClockState

_ZERO = dt.timedelta(0)


class SlaError(ValueError):
    """An SLA policy is misconfigured or was asked about an unknown tier; the message says how to fix it."""


class CheckpointKind(enum.Enum):
    WARNING = "warning"  # before the target: remind the owner
    BREACH = "breach"  # the target is missed: the circuit breaker's actions run
    ESCALATION = "escalation"  # still open long after the breach: tell the next level


class SlaStateKind(enum.Enum):
    ON_TRACK = "on_track"
    WARNING = "warning"
    BREACHED = "breached"
    PAUSED = "paused"
    STOPPED = "stopped"


class WorkingTime(Protocol):
    """How durations are counted: a `BusinessCalendar` or `WALL_CLOCK`."""

    def add_business_time(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime: ...

    def business_time_between(self, first: dt.datetime, second: dt.datetime) -> dt.timedelta: ...


class _WallClock:
    """Every minute counts: for policies with business_time: false."""

    def add_business_time(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime:
        return _utc(start) + duration

    def business_time_between(self, first: dt.datetime, second: dt.datetime) -> dt.timedelta:
        return _utc(second) - _utc(first)


WALL_CLOCK: WorkingTime = _WallClock()


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """One SLA as declared in the blueprint: targets per tier, warning and escalation percentages."""

    name: str
    targets: tuple[tuple[str, dt.timedelta], ...]  # (tier, target), e.g. (("S", 2h), ("A", 30min))
    warn_at: tuple[int, ...] = (50, 80)
    escalate_at: tuple[int, ...] = ()
    business_time: bool = True
    calendar: str | None = None  # the calendar's name; the caller passes the BusinessCalendar
    default_target: dt.timedelta | None = None  # for records whose tier is empty or not listed

    def __post_init__(self) -> None:
        for tier, target in self.targets:
            if target <= _ZERO:
                raise SlaError(f"SLA {self.name!r}: the target of tier {tier!r} must be longer than zero")
        if self.default_target is not None and self.default_target <= _ZERO:
            raise SlaError(f"SLA {self.name!r}: the default target must be longer than zero")
        if not self.targets and self.default_target is None:
            raise SlaError(f"SLA {self.name!r} has no target: give targets per tier or a default")
        if any(not 0 < percent < 100 for percent in self.warn_at):
            raise SlaError(f"SLA {self.name!r}: warnings are percentages between 1 and 99, got {list(self.warn_at)}")
        if any(percent <= 100 for percent in self.escalate_at):
            raise SlaError(f"SLA {self.name!r}: escalations come after the breach (> 100 %), got {list(self.escalate_at)}")

    def target_for(self, tier: str | None) -> dt.timedelta:
        """The target of `tier`, else the default; an unknown tier without a default is an error."""
        for name, target in self.targets:
            if name == tier:
                return target
        if self.default_target is not None:
            return self.default_target
        known = ", ".join(name for name, _ in self.targets)
        raise SlaError(f"SLA {self.name!r} has no target for tier {tier!r} (known: {known}); add one or a default")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A moment an SLA timer must fire: a warning, the breach, or a later escalation."""

    kind: CheckpointKind
    percent: int
    due_at: dt.datetime

    @property
    def name(self) -> str:
        return f"{self.kind.value}-{self.percent}"


@dataclass(frozen=True, slots=True)
class SlaStatus:
    """Where a record's SLA clock stands at one moment, for the record page and list filters."""

    state: SlaStateKind
    target: dt.timedelta
    elapsed: dt.timedelta  # counted time so far (business time when the policy says so)
    remaining: dt.timedelta  # negative once breached: how far overdue
    due_at: dt.datetime | None  # the breach moment; None while paused (it is not known yet)
    met: bool | None = None  # for a stopped clock: stopped before the breach?

    @property
    def percent_used(self) -> float:
        return 100 * (self.elapsed / self.target)


def sla_checkpoints(
    policy: SlaPolicy,
    started_at: dt.datetime,
    tier: str | None,
    paused_intervals: Sequence[Pause] = (),
    calendar: WorkingTime | None = None,
) -> list[Checkpoint]:
    """Every warning, breach and escalation of one clock, in order; none while the clock is paused."""
    if _open_pause(paused_intervals) is not None:
        return []
    measure = _measure(policy, calendar)
    target = policy.target_for(tier)
    return [
        Checkpoint(kind, percent, _moment_when_used(measure, started_at, paused_intervals, target * percent / 100))
        for kind, percent in _marks(policy)
    ]


def first_checkpoint(
    policy: SlaPolicy,
    started_at: dt.datetime,
    tier: str | None,
    paused_intervals: Sequence[Pause] = (),
    calendar: WorkingTime | None = None,
) -> tuple[Checkpoint | None, dt.datetime | None]:
    """`sla_checkpoints(...)[0]` and the breach's due time, without working out the others: a
    new cycle schedules its first checkpoint only (every lead created starts one or two clocks)."""
    if _open_pause(paused_intervals) is not None:
        return None, None
    measure = _measure(policy, calendar)
    target = policy.target_for(tier)
    kind, percent = _marks(policy)[0]
    first = Checkpoint(kind, percent, _moment_when_used(measure, started_at, paused_intervals, target * percent / 100))
    breach = first.due_at if kind is CheckpointKind.BREACH else \
        _moment_when_used(measure, started_at, paused_intervals, target)
    return first, breach


def _marks(policy: SlaPolicy) -> list[tuple[CheckpointKind, int]]:
    """The policy's checkpoints in order: its warnings, the breach, its escalations."""
    marks = [(CheckpointKind.WARNING, p) for p in sorted(set(policy.warn_at))]
    marks.append((CheckpointKind.BREACH, 100))
    marks += [(CheckpointKind.ESCALATION, p) for p in sorted(set(policy.escalate_at))]
    return marks


def shift_for_pause(due_at: dt.datetime, pause: Pause, policy: SlaPolicy, calendar: WorkingTime | None = None) -> dt.datetime:
    """A checkpoint's new due time once `pause` ended: later by the counted time the pause swallowed.

    A pause that began at or after the due time changes nothing (that checkpoint already fired).
    """
    if pause.end is None:
        raise SlaError("shift_for_pause needs a finished pause; while paused no checkpoint is due")
    if pause.start >= due_at:
        return _utc(due_at)
    measure = _measure(policy, calendar)
    return measure.add_business_time(due_at, measure.business_time_between(pause.start, pause.end))


def sla_state(
    now: dt.datetime,
    policy: SlaPolicy,
    started_at: dt.datetime,
    tier: str | None,
    paused_intervals: Sequence[Pause] = (),
    calendar: WorkingTime | None = None,
    stopped_at: dt.datetime | None = None,
) -> SlaStatus:
    """on_track / warning / breached / paused / stopped at `now`, with the due time and what remains."""
    measure = _measure(policy, calendar)
    target = policy.target_for(tier)
    until = now if stopped_at is None else min(now, stopped_at)
    elapsed = _counted_time(measure, started_at, paused_intervals, until)
    remaining = target - elapsed
    if stopped_at is not None and stopped_at <= now:
        due = _moment_when_used(measure, started_at, _closed(paused_intervals, stopped_at), target)
        return SlaStatus(SlaStateKind.STOPPED, target, elapsed, remaining, due, met=elapsed <= target)
    if _open_pause(paused_intervals) is not None:
        return SlaStatus(SlaStateKind.PAUSED, target, elapsed, remaining, None)
    due = _moment_when_used(measure, started_at, paused_intervals, target)
    if elapsed >= target:
        return SlaStatus(SlaStateKind.BREACHED, target, elapsed, remaining, due)
    first_warning = min(policy.warn_at, default=None)
    if first_warning is not None and elapsed >= target * first_warning / 100:
        return SlaStatus(SlaStateKind.WARNING, target, elapsed, remaining, due)
    return SlaStatus(SlaStateKind.ON_TRACK, target, elapsed, remaining, due)


def checkpoint_key(policy_name: str, entity: str, record_id: object, started_at: dt.datetime, checkpoint: Checkpoint) -> str:
    """The timer row's unique key: the same for a checkpoint however often it is rescheduled."""
    return checkpoint_keys(policy_name, entity, record_id, started_at, (checkpoint,))[0]


def checkpoint_keys(policy_name: str, entity: str, record_id: object, started_at: dt.datetime,
                    checkpoints: Sequence[Checkpoint]) -> list[str]:
    """`checkpoint_key` of each of one cycle's checkpoints (the shared prefix formatted once)."""
    prefix = checkpoint_key_prefix(policy_name, entity, record_id, started_at)
    return [prefix + checkpoint.name for checkpoint in checkpoints]


def checkpoint_key_prefix(policy_name: str, entity: str, record_id: object, started_at: dt.datetime | None = None) -> str:
    """The key prefix of one record's timers for a policy (all cycles, or one): for `TimerStore.cancel`."""
    prefix = f"sla:{policy_name}:{entity}:{record_id}:"
    return prefix if started_at is None else f"{prefix}{_utc(started_at).strftime('%Y%m%dT%H%M%S.%fZ')}:"


# --- internals ---------------------------------------------------------------------------------
def _measure(policy: SlaPolicy, calendar: WorkingTime | None) -> WorkingTime:
    if not policy.business_time:
        return WALL_CLOCK
    if calendar is None:
        raise SlaError(f"SLA {policy.name!r} counts business time; pass its calendar {policy.calendar!r}")
    return calendar


def _running_stretches(started_at: dt.datetime, pauses: Iterable[Pause]) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """The clock's running stretches from `started_at`: pauses clipped, sorted and merged; the last is open."""
    stretches: list[tuple[dt.datetime, dt.datetime | None]] = []
    cursor: dt.datetime | None = started_at
    for pause in sorted(pauses, key=lambda pause: pause.start):
        if cursor is None:
            break  # an open pause already stopped the clock for good
        if pause.end is not None and pause.end <= cursor:
            continue
        if pause.start > cursor:
            stretches.append((cursor, pause.start))
        cursor = pause.end if pause.end is None else max(cursor, pause.end)
    if cursor is not None:
        stretches.append((cursor, None))
    return stretches


def _moment_when_used(measure: WorkingTime, started_at: dt.datetime, pauses: Sequence[Pause], budget: dt.timedelta) -> dt.datetime:
    """The moment the clock has counted `budget`, skipping pauses (the pauses must all be finished)."""
    remaining = budget
    for begin, end in _running_stretches(started_at, pauses):
        if end is not None:
            available = measure.business_time_between(begin, end)
            if remaining > available:
                remaining -= available
                continue
        return measure.add_business_time(begin, remaining)
    raise SlaError("the clock is paused; no checkpoint is due until it resumes")


def _counted_time(measure: WorkingTime, started_at: dt.datetime, pauses: Sequence[Pause], until: dt.datetime) -> dt.timedelta:
    total = _ZERO
    for begin, end in _running_stretches(started_at, pauses):
        stop = until if end is None else min(end, until)
        if stop > begin:
            total += measure.business_time_between(begin, stop)
    return total


def _open_pause(pauses: Sequence[Pause]) -> Pause | None:
    return next((pause for pause in pauses if pause.end is None), None)


def _closed(pauses: Sequence[Pause], at: dt.datetime) -> list[Pause]:
    """Pauses as they stood when the clock stopped: one still open then ends at the stop."""
    return [Pause(pause.start, pause.end if pause.end is not None else at) for pause in pauses if pause.start < at]


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise SlaError(f"{moment!r} has no time zone; SLA math only accepts aware datetimes")
    return moment.astimezone(dt.timezone.utc)


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
        return on_view(spec.stops, current, active, after, viewer)
    if change == "deleted":
        return ClockDecision(Move.CANCEL, None, "record deleted") if active else ClockDecision(Move.NONE, current)
    tier = tier_of(spec, after)
    applies = truth(spec.applies_when, after, evaluate, True) and has_target(spec, tier)
    stopped = stop_reason(spec.stops, before, after, evaluate)
    paused = truth(spec.pauses_when, after, evaluate, False)
    fired = trigger_fired(spec.starts, change, before, after)
    if current is not None and active:
        if stopped is not None:
            return ClockDecision(Move.STOP, replace(current, state=ClockState.STOPPED), stopped)
        if not applies:
            return ClockDecision(Move.CANCEL, replace(current, state=ClockState.CANCELLED), "no longer under this SLA")
        if fired and change != "created" and not spec.counts_from_creation:  # from creation: one cycle per record
            return ClockDecision(Move.RESTART, fresh_clock(now, tier, paused), f"restarted: {spec.starts.kind}")
        if paused and current.state == ClockState.RUNNING:
            return ClockDecision(Move.PAUSE, replace(current, state=ClockState.PAUSED, pauses=(*current.pauses, Pause(now))),
                                 "paused")
        if not paused and current.state == ClockState.PAUSED:
            pauses = tuple(Pause(p.start, now) if p.end is None else p for p in current.pauses)
            return ClockDecision(Move.RESUME, replace(current, state=ClockState.RUNNING, pauses=pauses), "resumed")
        if tier != current.tier:
            return ClockDecision(Move.RETIER, replace(current, tier=tier), f"tier {current.tier} → {tier}")
        return ClockDecision(Move.NONE, current)
    if not applies or stopped is not None:
        return ClockDecision(Move.NONE, current)
    if current is not None and spec.counts_from_creation:
        return ClockDecision(Move.NONE, current)  # its one cycle (from creation) has run
    starts = trigger_holds(spec.starts, after) if current is None else fired
    if starts:
        begin = clock_start(spec, after, now)
        reason = f"started: {spec.starts.kind}" + (
            f", counted from creation at {begin.isoformat()}" if spec.counts_from_creation else "")
        return ClockDecision(Move.START, replace(fresh_clock(now, tier, paused), started_at=begin), reason)
    return ClockDecision(Move.NONE, current)


def clock_start(spec: SlaSpec, record: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    """Where a starting clock counts from: now (when `starts` fired), or for `from: created`
    the record's creation — a lead assigned two hours late has used two hours of its target."""
    created = record.get("created_at")
    if spec.counts_from_creation and isinstance(created, dt.datetime) and created <= now:
        return created if created.tzinfo else created.replace(tzinfo=dt.timezone.utc)
    return now


def counted(duration: DurationSpec, calendar: BusinessCalendar | None) -> dt.timedelta:
    """A blueprint duration as counted time ("1bd" = one ordinary working day of the calendar)."""
    day = calendar.working_day_length if calendar is not None else dt.timedelta(days=1)
    return duration.fixed + duration.business_days * day


def build_policy(spec: SlaSpec, calendar: BusinessCalendar | None) -> SlaPolicy:
    return SlaPolicy(spec.name, tuple((tier, counted(d, calendar)) for tier, d in spec.targets),
                     spec.warn_at, spec.escalate_at, spec.business_time, spec.calendar,
                     counted(spec.default_target, calendar) if spec.default_target else None)

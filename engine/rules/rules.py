"""Pure rule evaluation: which rules a change triggers, what each condition saw, and the
actions each rule would take — or why it takes none.

Nothing here reads or writes the database. The runtime hands in the record before and
after the change; `evaluate_rules` returns `Decision`s, which are at the same time the
instructions for the runtime (the actions) and the explanation for `crm explain` (the
trace). Rules run in order (priority, then as written) and each one sees the field
changes of the rules before it, so a grading rule can read the score a scoring rule set.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.metamodel.expressions import Expression
from engine.metamodel.rules import RuleSpec, TriggerKind, TriggerSpec
from engine.rules.actions import (FIELD_ACTIONS, NO_PLUGIN_ACTIONS, Action, ActionTypes, apply_field_actions,
                                  changed_values, resolve_actions)
from engine.rules.expressions import Evaluator, ExpressionError

MAX_TEXT_LENGTH = 4000
MAX_SHOWN_LENGTH = 80


class Change(enum.StrEnum):
    """What a write did to a record (a view counts when something watches for it)."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    VIEWED = "viewed"


class Origin(enum.StrEnum):
    """Through which door the change came; webhook and import changes can trigger their own rules."""

    USER = "user"
    WEBHOOK = "webhook"
    IMPORT = "import"
    RULE = "rule"
    TIMER = "timer"


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """What happened to a record. `source` names the webhook source when origin is WEBHOOK."""

    change: Change
    entity: str
    record_id: int | None = None
    origin: Origin = Origin.USER
    source: str | None = None


@dataclass(frozen=True, slots=True)
class TriggerMatch:
    matched: bool
    trigger: str
    reason: str


class Outcome(enum.Enum):
    TRUE = "true"
    FALSE = "false"
    ERROR = "error"
    NOT_EVALUATED = "not evaluated"


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """A condition's source, the value of every name it read, and what it gave."""

    source: str | None
    values: tuple[tuple[str, Any], ...]
    outcome: Outcome
    message: str = ""

    @property
    def is_true(self) -> bool:
        return self.outcome is Outcome.TRUE


# -- the actions a decision asks for, with every value already computed ----------------


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule's verdict on one change: matched or not, why, and what it would do."""

    rule: str
    entity: str
    record_id: int | None
    matched: bool
    trigger: TriggerMatch
    condition: ConditionResult
    actions: tuple[Action, ...] = ()
    why_none: str = ""
    error: str = ""
    location: str = ""
    at: dt.datetime | None = None


# -- evaluation ------------------------------------------------------------------------

def evaluate_rules(rules: Sequence[RuleSpec], trigger_event: TriggerEvent, before: Mapping[str, Any] | None,
                   after: Mapping[str, Any], evaluator: Evaluator, now: dt.datetime,
                   verbs: ActionTypes = NO_PLUGIN_ACTIONS) -> tuple[Decision, ...]:
    """A decision for every rule of the event's entity, in run order; later rules see the
    field changes (set, add/remove tags) of earlier matched rules. `verbs`: the plugins' actions."""
    current = dict(after)
    decisions = []
    ordered = sorted((rule for rule in rules if rule.entity == trigger_event.entity),
                     key=lambda rule: (rule.priority, rule.position))
    changed = None  # the names `current` changed, worked out once for the rules that need them
    for rule in ordered:
        if changed is None and any(trigger.kind in _NEEDS_CHANGES for trigger in rule.triggers):
            changed = _changed_by(trigger_event, before, current)
        decision = evaluate_rule(rule, trigger_event, before, current, evaluator, now, changed, verbs)
        decisions.append(decision)
        if decision.matched and any(isinstance(action, FIELD_ACTIONS) for action in decision.actions):
            current, changed = apply_field_actions(current, decision.actions), None
    return tuple(decisions)


def evaluate_rule(rule: RuleSpec, trigger_event: TriggerEvent, before: Mapping[str, Any] | None,
                  after: Mapping[str, Any], evaluator: Evaluator, now: dt.datetime,
                  changed: set[str] | None = None, verbs: ActionTypes = NO_PLUGIN_ACTIONS) -> Decision:
    """One rule against one change: trigger, then condition, then the actions' values.
    `changed`: `changed_fields` of the change, when the caller has it already."""
    def decide(trigger: TriggerMatch, condition: ConditionResult, *, actions: tuple[Action, ...] = (),
               why_none: str = "", error: str = "") -> Decision:
        return Decision(rule.name, rule.entity, trigger_event.record_id, bool(actions) and not error, trigger,
                        condition, actions, why_none, error, str(rule.location), now)

    not_evaluated = ConditionResult(rule.when.source if rule.when else None, (), Outcome.NOT_EVALUATED)
    if not rule.is_enabled:
        return decide(TriggerMatch(False, describe_triggers(rule.triggers), "not checked"), not_evaluated,
                      why_none="the rule is disabled (enabled: false)")
    trigger = match_triggers(rule.triggers, trigger_event, before, after, changed)
    if not trigger.matched:
        return decide(trigger, not_evaluated, why_none=f"its trigger did not fire: {trigger.reason}")
    condition = evaluate_condition(rule.when, after, evaluator)
    if condition.outcome is Outcome.ERROR:
        return decide(trigger, condition, why_none="its condition could not be evaluated", error=condition.message)
    if not condition.is_true:
        return decide(trigger, condition, why_none="its condition is false")
    try:
        actions = resolve_actions(rule.actions, after, evaluator, verbs)
    except ExpressionError as exc:
        return decide(trigger, condition, why_none="an action could not be computed", error=str(exc))
    return decide(trigger, condition, actions=actions)


def evaluate_condition(expression: Expression | None, values: Mapping[str, Any],
                       evaluator: Evaluator) -> ConditionResult:
    """The condition's outcome and the values it read; no condition means always true."""
    if expression is None:
        return ConditionResult(None, (), Outcome.TRUE)
    seen = tuple((name, values.get(name)) for name in sorted(expression.names))
    try:
        result = evaluator.evaluate(expression, values)
    except ExpressionError as exc:
        return ConditionResult(expression.source, seen, Outcome.ERROR, str(exc))
    return ConditionResult(expression.source, seen, Outcome.TRUE if result else Outcome.FALSE)


def planned_changes(decisions: Sequence[Decision], after: Mapping[str, Any]) -> dict[str, Any]:
    """The field values the matched decisions change, to write in the same transaction."""
    current: Mapping[str, Any] = after
    for decision in decisions:
        if decision.matched:
            current = apply_field_actions(current, decision.actions)
    return changed_values(after, current)


# -- triggers --------------------------------------------------------------------------

def match_triggers(triggers: Sequence[TriggerSpec], event: TriggerEvent, before: Mapping[str, Any] | None,
                   after: Mapping[str, Any], changed: set[str] | None = None) -> TriggerMatch:
    """The first of the rule's triggers that fires, or why none did. `changed`: the names whose
    value differs (`changed_fields`), when the caller already has them."""
    misses = []
    for trigger in triggers:
        if changed is None and trigger.kind in _NEEDS_CHANGES:
            changed = _changed_by(event, before, after)
        result = match_trigger(trigger, event, before, after, set() if changed is None else changed)
        if result.matched:
            return result
        misses.append(result.reason)
    return TriggerMatch(False, describe_triggers(triggers), "; ".join(misses))


_NEEDS_CHANGES = frozenset({TriggerKind.UPDATED, TriggerKind.FIELD_CHANGED, TriggerKind.STAGE_CHANGED,
                            TriggerKind.ASSIGNED, TriggerKind.HEALTH_DROPPED})


def _changed_by(event: TriggerEvent, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> set[str]:
    return changed_fields(before if event.change is Change.UPDATED else None, after)


def match_trigger(trigger: TriggerSpec, event: TriggerEvent, before: Mapping[str, Any] | None,
                  after: Mapping[str, Any], changed: set[str]) -> TriggerMatch:
    """Does this change fire `trigger`? `changed`: the names the change changed (`_changed_by`;
    on creation every non-empty field counts as changed)."""
    name = trigger.text
    kind = trigger.kind
    if kind is TriggerKind.CREATED:
        fired = event.change is Change.CREATED
        return TriggerMatch(fired, name, "the record was created" if fired else "the record was not created now")
    if kind is TriggerKind.UPDATED:
        fired = event.change is Change.UPDATED and bool(changed)
        return TriggerMatch(fired, name, f"changed: {', '.join(sorted(changed))}" if fired else
                            "this is not an update that changed a field")
    if kind is TriggerKind.FIELD_CHANGED:
        hits = [field for field in trigger.fields if field in changed]
        if hits:
            return TriggerMatch(True, name, "; ".join(_change_text(f, before, after) for f in hits))
        return TriggerMatch(False, name, f"{', '.join(trigger.fields)} did not change")
    if kind is TriggerKind.STAGE_CHANGED:
        return _match_stage(trigger, name, event, before, after, changed)
    if kind is TriggerKind.ASSIGNED:
        fired = "owner" in changed and after.get("owner") is not None
        return TriggerMatch(fired, name, _change_text("owner", before, after) if fired else "the owner did not change")
    if kind is TriggerKind.HEALTH_DROPPED:
        return _match_drop(trigger, name, event, before, after, changed)
    if kind is TriggerKind.WEBHOOK_RECEIVED:
        fired = event.origin is Origin.WEBHOOK and trigger.source in (None, event.source)
        wanted = f"source '{trigger.source}'" if trigger.source else "a webhook"
        return TriggerMatch(fired, name, f"received from source '{event.source}'" if fired else
                            f"the change did not come from {wanted} (origin: {event.origin.value}"
                            + (f" '{event.source}')" if event.source else ")"))
    fired = event.origin is Origin.IMPORT
    return TriggerMatch(fired, name, "the record came from an import" if fired else "the record was not imported")


def _level(levels: tuple[tuple[str, int], ...], score: Any) -> tuple[int, str] | None:
    if score is None or not levels:
        return None
    for rank, (level, minimum) in enumerate(levels):
        if int(score) >= minimum:
            return rank, level
    return len(levels) - 1, levels[-1][0]


def _match_drop(trigger: TriggerSpec, name: str, event: TriggerEvent, before: Mapping[str, Any] | None,
                after: Mapping[str, Any], changed: set[str]) -> TriggerMatch:
    """health_dropped: the score's level is worse than before (green → yellow, yellow → red …)."""
    field = trigger.field or ""
    if event.change is not Change.UPDATED or field not in changed:
        return TriggerMatch(False, name, f"{field} did not change")
    old, new = (before or {}).get(field), after.get(field)
    was, now = _level(trigger.levels, old), _level(trigger.levels, new)
    if was is None or now is None or now[0] <= was[0]:
        return TriggerMatch(False, name, f"{field} {show_value(old)} → {show_value(new)}: the level did not drop")
    return TriggerMatch(True, name, f"{field} {old} → {new}: {was[1]} → {now[1]}")


def _match_stage(trigger: TriggerSpec, name: str, event: TriggerEvent, before: Mapping[str, Any] | None,
                 after: Mapping[str, Any], changed: set[str]) -> TriggerMatch:
    field = trigger.field or "stage"
    if event.change is not Change.UPDATED or field not in changed:
        return TriggerMatch(False, name, f"{field} did not change")
    old, new = (before or {}).get(field), after.get(field)
    if trigger.from_values and str(old) not in trigger.from_values:
        return TriggerMatch(False, name, f"{field} left {show_value(old)}, not {' or '.join(trigger.from_values)}")
    if trigger.to_values and str(new) not in trigger.to_values:
        return TriggerMatch(False, name, f"{field} became {show_value(new)}, not {' or '.join(trigger.to_values)}")
    return TriggerMatch(True, name, _change_text(field, before, after))


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> set[str]:
    """Names whose value differs; without `before` (a creation) every non-empty value."""
    if before is None:
        return {name for name, value in after.items() if value not in (None, "", [], ())}
    return {name for name in set(before) | set(after) if before.get(name) != after.get(name)}


def describe_triggers(triggers: Sequence[TriggerSpec]) -> str:
    """How the triggers read in a trace."""
    return " or ".join(trigger.text for trigger in triggers)


def _change_text(field: str, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    return f"{field} {show_value((before or {}).get(field))} → {show_value(after.get(field))}"


# -- loops -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RuleApplication:
    """One rule applied to one record, as a link in a chain of writes caused by rules."""

    rule: str
    entity: str
    record_id: int | None


@dataclass(frozen=True, slots=True)
class RuleLoop:
    rule: str
    entity: str
    record_id: int | None
    count: int
    chain: tuple[RuleApplication, ...]

    @property
    def message(self) -> str:
        steps = " → ".join(f"{step.rule}({step.entity} {step.record_id})" for step in self.chain[-8:])
        return (f"rule '{self.rule}' re-triggered itself on {self.entity} {self.record_id} {self.count} times "
                f"in one chain ({steps}); stopped. Make sure its actions do not change what its trigger watches, "
                "or narrow its condition so it is false once the change is made.")


class RuleLoopError(RuntimeError):
    """A chain of rule-caused writes went round in a circle; `loop` says which rule and record."""

    def __init__(self, loop: RuleLoop) -> None:
        super().__init__(loop.message)
        self.loop = loop


def find_rule_loop(chain: Sequence[RuleApplication], *, max_repeats: int = 2,
                   max_length: int = 50) -> RuleLoop | None:
    """A loop when one rule applies to the same record more than `max_repeats` times in the
    chain, or when the chain grows beyond `max_length` links."""
    counts = Counter((step.rule, step.entity, step.record_id) for step in chain)
    for step in chain:
        count = counts[(step.rule, step.entity, step.record_id)]
        if count > max_repeats:
            return RuleLoop(step.rule, step.entity, step.record_id, count, tuple(chain))
    if len(chain) > max_length:
        last = chain[-1]
        return RuleLoop(last.rule, last.entity, last.record_id, counts[(last.rule, last.entity, last.record_id)],
                        tuple(chain))
    return None


# -- showing values --------------------------------------------------------------------

def show_value(value: Any) -> str:
    """A value as the trace shows it: text quoted, numbers plain, empty as 'empty'."""
    if value is None:
        return "empty"
    if isinstance(value, str):  # (first: most values a trace shows are text)
        if not value:
            return "empty"
        shown = value if len(value) <= MAX_SHOWN_LENGTH else value[:MAX_SHOWN_LENGTH] + "…"
        return f"'{shown}'"
    if value == [] or value == ():
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(item) for item in value) + "]"
    return show_text(value)


def show_text(value: Any) -> str:
    """A value as plain text, for notification templates."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat(sep=" ", timespec="minutes") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, (list, tuple)):
        return ", ".join(show_text(item) for item in value)
    return str(value)

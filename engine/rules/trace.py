"""The trace: what rules and routing decided for one change of one record, and why.

A `Trace` is built from the decision objects themselves (nothing is re-derived), stored
by the runtime as JSON next to the change (`trace_to_json` / `trace_from_json`), and
rendered as text by `crm explain`: per rule its trigger, condition, the values the
condition saw, true/false, and the actions taken or why none; per routing the policy, the
pool, who was skipped and why, and where the record went.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from engine.metamodel.routing import Strategy
from engine.rules.actions import (AddTags, Assign, CallWebhook, CreateRelated, Notify, RemoveTags, RequestApproval,
                                  SetField, Transition,
                                  UpdateRelated)
from engine.rules.routing import CursorState, PolicySelection, RoutingDecision, RoutingOutcome, Skip
from engine.rules.rules import (Change, ConditionResult, Decision, Origin, Outcome, TriggerEvent, TriggerMatch,
                                show_value)


@dataclass(frozen=True, slots=True)
class RoutingStep:
    """One request to route the record: the rule that asked, the policy picked, the result."""

    rule: str | None
    policy: str | None
    selection: PolicySelection | None = None
    decision: RoutingDecision | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything decided about one change of one record. `flags` holds intake findings such as
    'caught by the spam filter of source website_form: not routed'."""

    entity: str
    record_id: int | None
    event: TriggerEvent
    at: dt.datetime
    decisions: tuple[Decision, ...]
    routing: tuple[RoutingStep, ...] = ()
    flags: tuple[str, ...] = ()


# -- text ------------------------------------------------------------------------------

def render_trace(trace: Trace, zone: str | None = None) -> str:
    """The trace as text for `crm explain` and the record page; its time in `zone` (the
    business time zone, as the screens show times; UTC when none is given)."""
    lines = [_headline(trace, zone)]
    lines.extend(f"  flag: {flag}" for flag in trace.flags)
    matched = sum(1 for decision in trace.decisions if decision.matched)
    lines.append(f"  rules: {len(trace.decisions)} evaluated, {matched} matched")
    for number, decision in enumerate(trace.decisions, start=1):
        lines.extend(_render_decision(number, decision))
    if trace.routing:
        lines.append("  routing:")
        for step in trace.routing:
            lines.extend(_render_step(step))
    return "\n".join(lines)


def render_traces(traces: Sequence[Trace]) -> str:
    """Several traces (a record's history), oldest first, separated by blank lines."""
    return "\n\n".join(render_trace(trace) for trace in traces) if traces else "no rule or routing decisions recorded"


def _headline(trace: Trace, zone: str | None = None) -> str:
    event = trace.event
    record = f"{trace.entity} {trace.record_id}" if trace.record_id is not None else f"new {trace.entity}"
    via = {Origin.WEBHOOK: f" via webhook '{event.source}'", Origin.IMPORT: " via import",
           Origin.RULE: " by a rule", Origin.TIMER: " by a timer"}.get(event.origin, "")
    at = trace.at.astimezone(ZoneInfo(zone)) if zone and trace.at.tzinfo is not None else trace.at
    return f"{record} — {event.change.value}{via} at {at.isoformat(sep=' ', timespec='seconds')}"


def _render_decision(number: int, decision: Decision) -> list[str]:
    verdict = "MATCHED" if decision.matched else ("ERROR" if decision.error else "not matched")
    lines = [f"  {number}. rule '{decision.rule}': {verdict}" + (f"  [{decision.location}]" if decision.location
                                                                  else "")]
    pad = "       "
    lines.append(f"{pad}trigger:   {decision.trigger.trigger} — "
                 f"{'fired' if decision.trigger.matched else 'did not fire'}: {decision.trigger.reason}")
    condition = decision.condition
    if condition.outcome is not Outcome.NOT_EVALUATED:
        lines.append(f"{pad}condition: {condition.source or '(none: always true)'}")
        if condition.values:
            lines.append(f"{pad}values:    " + ", ".join(f"{name} = {show_value(value)}"
                                                         for name, value in condition.values))
        result = condition.outcome.value + (f": {condition.message}" if condition.message else "")
        lines.append(f"{pad}result:    {result}")
    if decision.error and decision.error != condition.message:
        lines.append(f"{pad}error:     {decision.error}")
    if decision.matched:
        for action in decision.actions:
            lines.append(f"{pad}action:    {describe_action(action)}")
    else:
        lines.append(f"{pad}no action: {decision.why_none}")
    return lines


def render_routing_step(step: RoutingStep, headline: str) -> str:
    """One routing request outside a rule trace (a timer's reassign), as `crm explain` shows it."""
    return "\n".join([headline, "  routing:", *_render_step(step)])


def _render_step(step: RoutingStep) -> list[str]:
    pad = "       "
    asked = f"rule '{step.rule}'" if step.rule else "the runtime"
    lines = [f"  - asked by {asked}: " + (f"policy '{step.policy}'" if step.policy else "first matching policy")]
    if step.selection is not None:
        for name, result in step.selection.checked:
            values = ", ".join(f"{n} = {show_value(v)}" for n, v in result.values)
            lines.append(f"{pad}tried '{name}': match {result.source or '(none)'} → {result.outcome.value}"
                         + (f" ({values})" if values else "") + (f": {result.message}" if result.message else ""))
        lines.append(f"{pad}{step.selection.reason}")
    if step.note:
        lines.append(f"{pad}{step.note}")
    decision = step.decision
    if decision is not None:
        lines.append(f"{pad}policy '{decision.policy}' ({decision.strategy.value}): {decision.pool_reason}")
        for skip in decision.skipped:
            lines.append(f"{pad}skipped:   {skip.username} — {skip.reason}")
        lines.append(f"{pad}result:    {_routing_result(decision)}")
        if decision.alert:
            lines.append(f"{pad}alert:     to '{decision.alert}': {decision.alert_text}")
    return lines


def _routing_result(decision: RoutingDecision) -> str:
    if decision.outcome is RoutingOutcome.ASSIGNED:
        return f"assigned to {decision.username} ({decision.reason})"
    if decision.outcome is RoutingOutcome.BACKUP:
        return f"assigned to backup {decision.username} ({decision.reason})"
    return f"{decision.outcome.value.upper()}: {decision.reason}"


def describe_action(action: Any) -> str:
    """One line per action, e.g. "set grade = 'S'" or "notify wecom → owner, manager: '…'"."""
    if isinstance(action, SetField):
        return f"set {action.field} = {show_value(action.value)}"
    if isinstance(action, AddTags):
        return f"add tags {', '.join(action.values)} to {action.field}"
    if isinstance(action, RemoveTags):
        return f"remove tags {', '.join(action.values)} from {action.field}"
    if isinstance(action, Assign):
        verb = "reassign" if action.reassign else "assign"
        if action.to:
            return f"{verb} to the first available of {', '.join(action.to)}"
        return f"{verb} by policy '{action.policy}'" if action.policy else f"{verb} by the first matching policy"
    if isinstance(action, CreateRelated):
        values = ", ".join(f"{name} = {show_value(value)}" for name, value in action.values)
        return f"create {action.entity} linked by {action.link_field}" + (f" ({values})" if values else "")
    if isinstance(action, UpdateRelated):
        values = ", ".join(f"{name} = {show_value(value)}" for name, value in (*action.values, *action.values_if_empty))
        target = {"parent": f"the {action.entity} it links to by {action.via}",
                  "children": f"each {action.entity} linked to it by {action.via}",
                  "siblings": f"each {action.entity} sharing its {action.via}"}[action.mode]
        return f"update {target}" + (f" where {action.where.source}" if action.where else "") + f" ({values})"
    if isinstance(action, Transition):
        return f"move {action.field} to {action.to}"
    if isinstance(action, Notify):
        body = show_value(action.text) if action.text is not None else f"template {action.template}"
        return f"notify {action.channel} → {', '.join(action.to)}: {body}"
    if isinstance(action, CallWebhook):
        return f"call webhook {action.url or '$' + str(action.url_env)}"
    if isinstance(action, RequestApproval):
        return f"request approval {action.approval}" + (f" ({show_value(action.reason)})" if action.reason else "")
    return repr(action)


# -- JSON ------------------------------------------------------------------------------

_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    Trace, RoutingStep, TriggerEvent, TriggerMatch, ConditionResult, Decision, SetField, AddTags, RemoveTags,
    Assign, CreateRelated, UpdateRelated, Transition, Notify, CallWebhook, RequestApproval, PolicySelection, RoutingDecision, Skip, CursorState)}
_ENUMS: dict[str, type[enum.Enum]] = {cls.__name__: cls for cls in (
    Change, Origin, Outcome, RoutingOutcome, Strategy)}


def trace_to_json(trace: Trace) -> dict[str, Any]:
    """A JSON-ready form of the trace, to store with the change it explains."""
    result = _to_json(trace)
    assert isinstance(result, dict)
    return result


def trace_from_json(data: Mapping[str, Any]) -> Trace:
    """The trace stored by `trace_to_json`; only the trace's own types are rebuilt."""
    trace = _from_json(data)
    if not isinstance(trace, Trace):
        raise ValueError("not a stored trace")
    return trace


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {field.name: _to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
        return {"$type": type(value).__name__, **fields}
    if isinstance(value, enum.Enum):
        return {"$enum": type(value).__name__, "value": value.value}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return {"$dict": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"$text": str(value)}


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_json(item) for item in value)
    if not isinstance(value, dict):
        return value
    if "$type" in value:
        cls = _CLASSES.get(value["$type"])
        if cls is None:
            raise ValueError(f"unknown type in stored trace: {value['$type']!r}")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: _from_json(item) for key, item in value.items() if key in names})
    if "$enum" in value:
        enum_class = _ENUMS.get(value["$enum"])
        if enum_class is None:
            raise ValueError(f"unknown enum in stored trace: {value['$enum']!r}")
        return enum_class(value["value"])
    if "$datetime" in value:
        return dt.datetime.fromisoformat(value["$datetime"])
    if "$date" in value:
        return dt.date.fromisoformat(value["$date"])
    if "$decimal" in value:
        return decimal.Decimal(value["$decimal"])
    if "$dict" in value:
        return {_from_json(k): _from_json(v) for k, v in value["$dict"]}
    return value.get("$text", value)

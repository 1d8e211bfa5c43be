"""`sla:` documents: one SLA policy — which records, when its clock starts, pauses and stops, targets
per tier in business time, warning and escalation points, and the actions at each.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.actions import ACTIONS, ActionSpec, build_actions
from engine.metamodel.calendars import calendar_ref
from engine.metamodel.checks import Built, Checker, default_label
from engine.metamodel.clocks import (CLOCK_TRIGGER, STOP, ClockTrigger, StopCondition, build_stops, build_trigger,
                                     optional_expression)
from engine.metamodel.durations import DURATION_SCHEMA, DurationSpec, checked_duration
from engine.metamodel.errors import NOWHERE, BlueprintError, Location
from engine.metamodel.expressions import Expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import EXPRESSION, LABEL, NAME
from engine.metamodel.source import SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


@dataclass(frozen=True, slots=True)
class SlaSpec:
    name: str
    label: Label
    entity: str
    targets: tuple[tuple[str, DurationSpec], ...]
    default_target: DurationSpec | None
    starts: ClockTrigger
    applies_when: Expression | None = None
    tier: str | None = None
    business_time: bool = True
    calendar: str | None = None
    pauses_when: Expression | None = None
    stops: tuple[StopCondition, ...] = ()
    warn_at: tuple[int, ...] = (50, 80)
    escalate_at: tuple[int, ...] = ()
    on_warning: tuple[ActionSpec, ...] = ()
    on_breach: tuple[ActionSpec, ...] = ()
    on_escalation: tuple[ActionSpec, ...] = ()
    counts_from: str = "start"  # "start": from when `starts` fires; "created": from the record's creation
    location: Location = NOWHERE

    @property
    def counts_from_creation(self) -> bool:
        return self.counts_from == "created"

    def describe_start(self) -> str:
        """How the clock's figures count, as explain and doctor say it."""
        if self.counts_from_creation:
            return f"starts when {self.starts.kind}, counted from the record's creation"
        return f"counted from when {self.starts.kind}"


PERCENTS = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}


SLA_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["sla", "entity"], "additionalProperties": False, "properties": {
        "sla": NAME, "label": LABEL, "description": {"type": "string"}, "entity": NAME,
        "applies_when": EXPRESSION, "tier": NAME,
        "targets": {"type": "object", "minProperties": 1, "additionalProperties": DURATION_SCHEMA},
        "default_target": DURATION_SCHEMA, "business_time": {"type": "boolean"}, "calendar": NAME,
        "starts": CLOCK_TRIGGER, "from": {"enum": ["start", "created"]}, "pauses_when": EXPRESSION, "stops": {"type": "array", "items": STOP},
        "warn_at": PERCENTS, "escalate_at": PERCENTS,
        "on_warning": ACTIONS, "on_breach": ACTIONS, "on_escalation": ACTIONS}}


def build_slas(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """SlaSpecs from every `sla:` document, checked against entities, calendars, channels and templates."""
    errors: list[BlueprintError] = []
    slas: dict[str, SlaSpec] = {}
    for doc in documents:
        checker = Checker(doc, model, vocabulary, errors)
        data, name = doc.data, doc.data["sla"]
        if name in slas:
            checker.error(("sla",), Msg("SLA '{name}' is declared twice", name=name),
                          Msg("the first is at {place}", place=str(slas[name].location)))
            continue
        entity = checker.entity(("entity",), data["entity"], Msg("SLA '{name}'", name=name))
        if entity is None:
            continue
        tier = data.get("tier")
        tier_spec = checker.field(("tier",), entity, tier, Msg("tier")) if tier else None
        targets = []
        for value, text in (data.get("targets") or {}).items():
            checker.option(("targets", value), tier_spec, value, Msg("tier"))
            targets.append((str(value), checked_duration(checker, ("targets", value), text)))
        default = checked_duration(checker, ("default_target",), data["default_target"]) if "default_target" in data else None
        if not targets and default is None:
            checker.error(("sla",), Msg("SLA '{name}' has no target", name=name),
                          Msg("give targets per tier or a default_target"))
        business_time = bool(data.get("business_time", True))
        warn_at, escalate_at = tuple(data.get("warn_at", (50, 80))), tuple(data.get("escalate_at", ()))
        if any(not 0 < p < 100 for p in warn_at):
            checker.error(("warn_at",), Msg("warnings are percentages between 1 and 99"))
        if any(p <= 100 for p in escalate_at):
            checker.error(("escalate_at",), Msg("escalations come after the breach: percentages above 100"))
        for value, duration in targets + ([("default", default)] if default else []):
            if business_time and duration.fixed >= dt.timedelta(days=1):
                checker.error(("targets", value) if value != "default" else ("default_target",),
                              Msg("'{duration}' in a business-time SLA means 24 working hours each day",
                                  duration=duration.text),
                              Msg("write 1bd for one business day"), severity="warning")
        slas[name] = SlaSpec(
            name, default_label(data, name), entity.name, tuple(targets), default,
            build_trigger(checker, ("starts",), data.get("starts"), entity),
            optional_expression(checker, ("applies_when",), data.get("applies_when"), entity), tier, business_time,
            calendar_ref(checker, (), data.get("calendar"), business_time),
            optional_expression(checker, ("pauses_when",), data.get("pauses_when"), entity),
            build_stops(checker, ("stops",), data.get("stops") or [], entity), warn_at, escalate_at,
            on_warning=build_actions(checker, ("on_warning",), data.get("on_warning") or [], entity),
            on_breach=build_actions(checker, ("on_breach",), data.get("on_breach") or [], entity),
            on_escalation=build_actions(checker, ("on_escalation",), data.get("on_escalation") or [], entity),
            counts_from=str(data.get("from", "start")), location=doc.where_key(("sla",)))
    # the approvals' step policies (built before) stay: they are SLA policies like these
    return replace(model, slas=model.slas + tuple(slas.values())), errors

"""`cadences:` documents: named step sequences with delays, a start trigger and stop conditions
("day 1 send the comparison sheet, day 3 the case video; stop when the customer replies").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.actions import ACTIONS, ActionSpec, build_actions
from engine.metamodel.calendars import calendar_ref
from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.clocks import CLOCK_TRIGGER, STOP, ClockTrigger, StopCondition, build_stops, build_trigger
from engine.metamodel.durations import DURATION_SCHEMA, DurationSpec, checked_duration
from engine.metamodel.errors import NOWHERE, Location
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


@dataclass(frozen=True, slots=True)
class CadenceStepSpec:
    name: str
    after: DurationSpec
    actions: tuple[ActionSpec, ...]


@dataclass(frozen=True, slots=True)
class CadenceSpec:
    name: str
    label: Label
    entity: str
    starts: ClockTrigger
    steps: tuple[CadenceStepSpec, ...]
    stops: tuple[StopCondition, ...] = ()
    restart_on_update: bool = False
    business_time: bool = False
    calendar: str | None = None
    location: Location = NOWHERE


CADENCES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["cadences"], "additionalProperties": False, "properties": {
        "cadences": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["entity", "starts", "steps"], "additionalProperties": False,
            "properties": {
                "label": LABEL, "description": {"type": "string"}, "entity": NAME, "starts": CLOCK_TRIGGER,
                "restart_on_update": {"type": "boolean"}, "business_time": {"type": "boolean"},
                "calendar": NAME, "stops": {"type": "array", "items": STOP},
                "steps": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "after", "actions"], "additionalProperties": False,
                    "properties": {"name": NAME, "label": LABEL, "after": DURATION_SCHEMA,
                                   "actions": {**ACTIONS, "minItems": 1}}}}}}}}}


def build_cadences(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """CadenceSpecs: a start trigger, ordered steps with delays and actions, stop conditions."""
    cadences, errors = build_items("cadences", Msg("cadence"), documents, model, vocabulary, _build_cadence)
    return replace(model, cadences=tuple(cadences)), errors


def _build_cadence(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> CadenceSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("cadence '{name}'", name=name))
    if entity is None:
        return None
    business_time = bool(data.get("business_time", False))
    steps, seen = [], set()
    for index, step in enumerate(data["steps"]):
        where = path + ("steps", index)
        if step["name"] in seen:
            checker.error(where + ("name",), Msg("step '{step}' appears twice in cadence '{cadence}'",
                                                 step=step["name"], cadence=name))
        seen.add(step["name"])
        steps.append(CadenceStepSpec(step["name"], checked_duration(checker, where + ("after",), step["after"]),
                                     build_actions(checker, where + ("actions",), step["actions"], entity)))
    return CadenceSpec(
        name, default_label(data, name), entity.name, build_trigger(checker, path + ("starts",), data["starts"], entity),
        tuple(steps), build_stops(checker, path + ("stops",), data.get("stops") or [], entity),
        bool(data.get("restart_on_update", False)), business_time,
        calendar_ref(checker, path, data.get("calendar"), business_time), checker.doc.where_key(path))

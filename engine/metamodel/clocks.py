"""Per-record clocks in the blueprint: when an SLA clock or a cadence starts (`ClockTrigger`) and
what stops it (`StopCondition`), shared by sla.py and cadences.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.metamodel.checks import Checker
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.expressions import Expression
from engine.metamodel.messages import Msg
from engine.metamodel.schema import EXPRESSION, NAME
from engine.metamodel.source import PathKey


@dataclass(frozen=True, slots=True)
class ClockTrigger:
    """When a clock starts: created, assigned, updated, stage_entered (value), field_set (field)."""

    kind: str
    field: str | None = None
    value: str | None = None


@dataclass(frozen=True, slots=True)
class StopCondition:
    """field_set (field), status_in (field, values), when (expression), stage_changed (field),
    replied (entity, link, expression: a related record saying the customer answered),
    viewed_by (values: ("owner",) or ("anyone",): a person opened the record)."""

    kind: str
    field: str | None = None
    values: tuple[str, ...] = ()
    expression: Expression | None = None
    entity: str | None = None


CLOCK_TRIGGER = {"oneOf": [{"enum": ["created", "assigned", "updated"]},
                      {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
                       "properties": {"stage_entered": {"type": "string"}, "field_set": NAME}}]}


STOP = {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
    "field_set": NAME, "status_in": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "field": NAME, "when": EXPRESSION, "stage_changed": {"type": "boolean"},
    "viewed_by": {"enum": ["owner", "anyone"]},
    "replied": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
                "properties": {"entity": NAME, "link": NAME, "when": EXPRESSION}}}}


def build_trigger(checker: Checker, path: PathKey, raw: Any, entity: EntitySpec) -> ClockTrigger:
    if raw is None:
        return ClockTrigger("created")
    if isinstance(raw, str):
        return ClockTrigger(raw)
    if "field_set" in raw:
        checker.field(path + ("field_set",), entity, raw["field_set"], "field_set", system_ok=True)
        return ClockTrigger("field_set", field=raw["field_set"])
    stage = stage_field(checker, path, entity)
    if stage is not None:
        checker.option(path + ("stage_entered",), entity.field(stage), raw["stage_entered"], Msg("stage"))
    return ClockTrigger("stage_entered", field=stage, value=str(raw["stage_entered"]))


def stage_field(checker: Checker, path: PathKey, entity: EntitySpec) -> str | None:
    name = entity.stage_field
    if name is None:
        checker.error(path, Msg("entity '{entity}' has no stage or status field to watch", entity=entity.name))
    return name


def build_stops(checker: Checker, path: PathKey, raw: list[dict[str, Any]], entity: EntitySpec) -> tuple[StopCondition, ...]:
    stops: list[StopCondition] = []
    for index, item in enumerate(raw):
        where = path + (index,)
        if "field_set" in item:
            checker.field(where + ("field_set",), entity, item["field_set"], "field_set", system_ok=True)
            stops.append(StopCondition("field_set", field=item["field_set"]))
        elif "status_in" in item:
            name = item.get("field") or stage_field(checker, where, entity)
            spec = checker.field(where, entity, name, Msg("status field")) if name else None
            for value in item["status_in"]:
                checker.option(where + ("status_in",), spec, value, Msg("status"))
            stops.append(StopCondition("status_in", field=name, values=tuple(map(str, item["status_in"]))))
        elif "when" in item:
            stops.append(StopCondition("when", expression=checker.expression(where + ("when",), item["when"], entity)))
        elif item.get("stage_changed"):
            stops.append(StopCondition("stage_changed", field=item.get("field") or stage_field(checker, where, entity)))
        elif "replied" in item:
            stops.append(_replied(checker, where + ("replied",), item["replied"], entity))
        elif "viewed_by" in item:
            stops.append(StopCondition("viewed_by", values=(item["viewed_by"],)))
        else:
            checker.error(where, Msg("a stop condition needs field_set, status_in, when, stage_changed, replied "
                                     "or viewed_by"))
    return tuple(stops)


def _replied(checker: Checker, path: PathKey, raw: dict[str, Any], entity: EntitySpec) -> StopCondition:
    related = checker.entity(path + ("entity",), raw["entity"], "replied")
    expression = None
    if related is not None:
        link = checker.field(path + ("link",), related, raw["link"], "link", (FieldType.LINK,))
        if link is not None and link.link_entity != entity.name:
            checker.error(path + ("link",), Msg("'{link}' links {entity} to {target}, not to {source}",
                                                link=raw["link"], entity=related.name, target=link.link_entity,
                                                source=entity.name),
                          Msg("name the link field that points at this record"))
        if "when" in raw:
            expression = checker.expression(path + ("when",), raw["when"], related)
    return StopCondition("replied", field=raw["link"], expression=expression, entity=raw["entity"])


def optional_expression(checker: Checker, path: PathKey, source: str | None, entity: EntitySpec) -> Expression | None:
    return checker.expression(path, source, entity) if source else None

"""`alerts:` documents: windowed aggregate conditions — "the same fault code in one region 5
times within 3 days raises one quality alert".

An alert counts the records of `entity` that share the values of its `group_by` fields and were
created within `window`, among those matching `where` (field → allowed values, like a job's
count) and not yet part of an alert. When a written record makes that count reach `threshold`,
one record of `record.entity` is created (its values read the record that tipped the count),
every counted record is linked to it through `record.link`, and `on_raised` runs on the new
alert record (the one action vocabulary: notify the R&D channel, …). While the alert record
meets `record.open_while`, later records of the same group join it instead of counting anew.

The count is an index range scan: the entity must declare an index on the group fields followed
by `created_at` (checked here, with the line to add).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.actions import ACTIONS, ActionSpec, build_actions
from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.durations import DURATION_SCHEMA, DurationSpec, checked_duration
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import Expression, ValueSpec
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import EXPRESSION, LABEL, NAME, VALUES
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


_GROUPABLE = (FieldType.STRING, FieldType.CHOICE, FieldType.LINK, FieldType.INTEGER, FieldType.BOOLEAN,
              FieldType.DATE, FieldType.USER)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One windowed condition: count `entity` per `group_by` within `window`; at `threshold`
    create one `alert_entity` record linked from every counted record through `link`."""

    name: str
    label: Label
    entity: str
    group_by: tuple[str, ...]
    window: DurationSpec
    threshold: int
    alert_entity: str
    link: str                                      # entity's link field to alert_entity
    values: tuple[tuple[str, ValueSpec], ...] = ()  # of the alert record, read from the tipping record
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    count_field: str | None = None                 # alert_entity's integer field kept at the member count
    open_while: Expression | None = None           # over the alert record; None: open for ever
    on_raised: tuple[ActionSpec, ...] = ()         # on the alert record
    location: Location = NOWHERE


ALERTS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["alerts"], "additionalProperties": False, "properties": {
        "alerts": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["entity", "group_by", "window", "threshold", "record"],
            "additionalProperties": False,
            "properties": {
                "label": LABEL, "description": {"type": "string"}, "entity": NAME,
                "group_by": {"type": "array", "items": NAME, "minItems": 1, "uniqueItems": True},
                "where": {"type": "object", "propertyNames": NAME},
                "window": DURATION_SCHEMA,
                "threshold": {"type": "integer", "minimum": 2},
                "record": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
                           "properties": {"entity": NAME, "link": NAME, "values": VALUES, "count_field": NAME,
                                          "open_while": EXPRESSION}},
                "on_raised": ACTIONS}}}}}


def build_alerts(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    alerts, errors = build_items("alerts", Msg("alert"), documents, model, vocabulary, _build_alert)
    return replace(model, alerts=tuple(alerts)), errors


def _build_alert(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> AlertSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("alert '{name}'", name=name))
    raw = data["record"]
    target = checker.entity(path + ("record", "entity"), raw["entity"], Msg("alert '{name}' record", name=name))
    if entity is None or target is None:
        return None
    group = tuple(data["group_by"])
    known = [checker.field(path + ("group_by", index), entity, field_name, Msg("group_by field"), types=_GROUPABLE)
             for index, field_name in enumerate(group)]
    where = []
    for field_name, value in (data.get("where") or {}).items():
        spec = checker.field(path + ("where", field_name), entity, field_name, Msg("where field"))
        values = tuple(value) if isinstance(value, list) else (value,)
        for item in values:
            checker.option(path + ("where", field_name), spec, item, Msg("value"))
        where.append((field_name, values))
    window = checked_duration(checker, path + ("window",), data["window"])
    if window.business_days:
        checker.error(path + ("window",), Msg("an alert window is calendar time, not business days"),
                      Msg("write it in d, h or min, e.g. 3d"))
    link = checker.field(path + ("record", "link"), entity, raw["link"], Msg("record link"), types=(FieldType.LINK,))
    if link is not None and link.link_entity != target.name:
        checker.error(path + ("record", "link"), Msg("{entity}.{link} links to {linked}, not {target}",
                                                     entity=entity.name, link=link.name, linked=link.link_entity,
                                                     target=target.name),
                      did_you_mean(target.name, [f.name for f in entity.fields if f.link_entity == target.name]))
    if all(spec is not None for spec in known):
        _check_index(checker, path, entity, group)
    values = tuple((field_name, checker.value(path + ("record", "values", field_name), value, entity,
                                              checker.field(path + ("record", "values", field_name), target,
                                                            field_name, Msg("alert value"))))
                   for field_name, value in (raw.get("values") or {}).items())
    for spec in target.fields:
        if spec.is_required and spec.default is None and spec.default_expression is None \
                and spec.name not in dict(values) and spec.name != raw.get("count_field"):
            checker.error(path + ("record",), Msg("{target} requires '{field}', which the alert does not give",
                                                  target=target.name, field=spec.name),
                          Msg("add it under record.values: {{{field}: …}}", field=spec.name))
    count_field = raw.get("count_field")
    if count_field is not None:
        checker.field(path + ("record", "count_field"), target, count_field, "count_field",
                      types=(FieldType.INTEGER,))
    open_while = checker.expression(path + ("record", "open_while"), raw["open_while"], target) \
        if raw.get("open_while") else None
    actions = build_actions(checker, path + ("on_raised",), data.get("on_raised") or [], target)
    return AlertSpec(name, default_label(data, name), entity.name, group, window, int(data["threshold"]),
                     target.name, raw["link"], values, tuple(where), count_field, open_while, actions,
                     checker.doc.where_key(path))


def _check_index(checker: Checker, path: PathKey, entity: EntitySpec, group: tuple[str, ...]) -> None:
    """The count must be a range scan: an index on the group fields (any order), then created_at."""
    for index in entity.indexes:
        head = index.fields[:len(group)]
        if set(head) == set(group) and index.fields[len(group):len(group) + 1] == ("created_at",):
            return
    fields = ", ".join((*group, "created_at"))
    checker.error(path + ("group_by",), Msg("alert counts {entity} by {group} within a window, but "
                                            "{entity} has no index for that count",
                                            entity=entity.name, group=", ".join(group)),
                  Msg("add to the {entity} entity: indexes: [{{fields: [{fields}]}}]", entity=entity.name,
                      fields=fields))

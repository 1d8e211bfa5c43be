"""Conversions (`conversions:` documents): one record becomes several, in one write.

```yaml
conversions:
  lead_to_customer:
    entity: lead
    label: {zh: 转化为客户, en: Convert to customer}
    when: "status == 'qualified'"            # which records may convert (else refused, saying so)
    message: {zh: 只有已确认的线索可以转化, en: Only qualified leads can be converted}   # the refusal (optional)
    into:                                    # created in this order; a later step may name an earlier one
      account:
        entity: account
        link: converted_account              # the lead's link field that keeps what it became
        match_on: [name]                     # reuse the account with the same name (default: its dedup keys)
        fields: {name: "=coalesce(company, name)", industry: industry, region: region}
      contact:
        entity: contact
        link: converted_contact
        fields: {name: name, phone: phone, account: account}     # `account`: the account of the step above
    set: {status: converted, converted_at: "=now()"}             # the converted record's own changes
```

A field value is the name of a field of the converted record (or `id`, `owner`), the name of an
earlier step (that step's record), an `=expression` over the converted record, or a literal.
A record whose link fields already point somewhere has been converted: a second conversion is
refused and names what it became (engine/runtime/automation/conversions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.expressions import EXPRESSION_PREFIX, Expression, ExpressionSyntaxError, parse_expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.source import PathKey, SourceDocument

if TYPE_CHECKING:
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary

_LABEL: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}]}
_NAME: dict[str, Any] = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
_VALUES: dict[str, Any] = {"type": "object", "propertyNames": _NAME,
                           "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}
CONVERSIONS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["conversions"], "additionalProperties": False,
    "properties": {"conversions": {"type": "object", "minProperties": 1, "propertyNames": _NAME,
                                   "additionalProperties": {
        "type": "object", "required": ["entity", "into"], "additionalProperties": False,
        "properties": {
            "entity": _NAME, "label": _LABEL, "description": {}, "when": {"type": "string", "minLength": 1},
            "message": _LABEL,
            "set": _VALUES,
            "into": {"type": "object", "minProperties": 1, "propertyNames": _NAME, "additionalProperties": {
                "type": "object", "required": ["entity", "link", "fields"], "additionalProperties": False,
                "properties": {"entity": _NAME, "link": _NAME, "label": _LABEL, "fields": _VALUES,
                               "match_on": {"type": "array", "items": _NAME, "minItems": 1}}}}}}}},
}


@dataclass(frozen=True, slots=True)
class ConversionValue:
    """One value of a created record: from a field (`source`), an earlier step, an expression or a literal."""

    field: str
    source: str | None = None
    step: str | None = None
    expression: Expression | None = None
    literal: Any = None


@dataclass(frozen=True, slots=True)
class ConversionStep:
    name: str
    entity: str
    link: str
    label: Label
    values: tuple[ConversionValue, ...]
    match_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversionSpec:
    name: str
    entity: str
    label: Label
    steps: tuple[ConversionStep, ...]
    when: Expression | None = None
    sets: tuple[ConversionValue, ...] = ()
    location: Location = NOWHERE
    message: Label | None = None  # said when `when` is false; default: the condition in the field's words

    @property
    def links(self) -> tuple[str, ...]:
        return tuple(step.link for step in self.steps)


def build_conversions(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    errors: list[BlueprintError] = []
    specs: dict[str, ConversionSpec] = {}
    for doc in documents:
        for name, data in doc.data["conversions"].items():
            spec = _build(doc, name, data, model, errors)
            if spec is not None:
                specs[name] = spec
    return replace(model, conversions=tuple(specs.values())), errors


def _build(doc: SourceDocument, name: str, data: dict[str, Any], model: Metamodel,
           errors: list[BlueprintError]) -> ConversionSpec | None:
    path: PathKey = ("conversions", name)

    def fail(where: PathKey, message: Msg, hint: Msg) -> None:
        errors.append(BlueprintError(doc.where(where) if where in doc.values else doc.where_key(where), where,
                                     Msg("conversion '{name}': {problem}", name=name, problem=message), hint))

    if not model.has_entity(data["entity"]):
        fail(path + ("entity",), Msg("unknown entity '{name}'", name=data["entity"]),
             did_you_mean(data["entity"], model.entity_names()))
        return None
    source = model.entity(data["entity"])
    when = _expression(doc, path + ("when",), data["when"], fail) if "when" in data else None
    steps: list[ConversionStep] = []
    for step_name, step in data["into"].items():
        step_path = path + ("into", step_name)
        if not model.has_entity(step["entity"]):
            fail(step_path + ("entity",), Msg("unknown entity '{name}'", name=step["entity"]),
                 did_you_mean(step["entity"], model.entity_names()))
            continue
        target = model.entity(step["entity"])
        link = step["link"]
        if not source.has_field(link) or source.field(link).type is not FieldType.LINK \
                or source.field(link).link_entity != target.name:
            fail(step_path + ("link",), Msg("'{link}' is not a link field of {source} to {target}", link=link,
                                            source=source.name, target=target.name),
                 did_you_mean(link, [spec.name for spec in source.fields if spec.link_entity == target.name]))
            continue
        match_on = tuple(step.get("match_on") or (target.dedup.keys[0] if target.dedup is not None else ()))
        for position, key in enumerate(match_on):
            if not target.has_field(key):
                fail(step_path + ("match_on", position), Msg("{entity} has no field '{field}' to match on",
                                                             entity=target.name, field=key),
                     did_you_mean(key, target.field_names()))
        values = _values(doc, step_path + ("fields",), step["fields"], source, target,
                         [item.name for item in steps], fail)
        steps.append(ConversionStep(step_name, target.name, link, Label.of(step.get("label"), target.label.text("en")),
                                    values, match_on))
    sets = _values(doc, path + ("set",), data.get("set") or {}, source, source, [], fail)
    return ConversionSpec(name, source.name, Label.of(data.get("label"), name.replace("_", " ").capitalize()),
                          tuple(steps), when, sets, doc.where_key(path),
                          Label.of(data["message"]) if "message" in data else None)


def _expression(doc: SourceDocument, path: PathKey, text: str, fail: Any) -> Expression | None:
    try:
        return parse_expression(text, doc.where(path))
    except ExpressionSyntaxError as problem:
        fail(path, Msg("bad expression '{source}': {problem}", source=text, problem=problem),
             Msg("see docs/expressions.md"))
        return None


def _values(doc: SourceDocument, path: PathKey, data: dict[str, Any], source: EntitySpec, target: EntitySpec,
            steps: list[str], fail: Any) -> tuple[ConversionValue, ...]:
    values = []
    readable = [*source.field_names(), "id", "owner"]
    for field_name, raw in data.items():
        where = path + (field_name,)
        if not target.has_field(field_name) and field_name != "owner":
            fail(where, Msg("{entity} has no field '{field}'", entity=target.name, field=field_name),
                 did_you_mean(field_name, target.field_names()))
            continue
        if isinstance(raw, str) and raw.startswith(EXPRESSION_PREFIX):
            expression = _expression(doc, where, raw[1:], fail)
            if expression is not None:
                values.append(ConversionValue(field_name, expression=expression))
        elif isinstance(raw, str) and raw in steps:
            values.append(ConversionValue(field_name, step=raw))
        elif isinstance(raw, str) and raw in readable:
            values.append(ConversionValue(field_name, source=raw))
        elif isinstance(raw, str) and raw.isidentifier() and raw.islower() and target.has_field(field_name) \
                and target.field(field_name).type is not FieldType.CHOICE:
            fail(where, Msg("'{value}' is neither a field of {entity} nor an earlier step", value=raw,
                            entity=source.name),
                 Msg("{suggestion}; write a literal text as \"='text'\"", suggestion=did_you_mean(raw, [*readable, *steps])))
        else:
            values.append(ConversionValue(field_name, literal=raw))
    return tuple(values)

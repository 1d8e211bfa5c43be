"""`rules:` documents: when a record changes (trigger) and a condition holds, run ordered actions
(actions.py). Triggers and conditions are checked against the entity at load.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.metamodel.actions import ACTIONS, ActionSpec, build_actions
from engine.metamodel.checks import Built, Checker, build_items, texts
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import COMMON, EXPRESSION, NAME, TEXT_OR_LIST, either, named_schema
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


DEFAULT_PRIORITY = 100


class TriggerKind(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    FIELD_CHANGED = "field_changed"
    STAGE_CHANGED = "stage_changed"
    ASSIGNED = "assigned"
    WEBHOOK_RECEIVED = "webhook_received"
    IMPORT_ROW = "import_row"
    HEALTH_DROPPED = "health_dropped"   # a score's level got worse (scores.py)


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """When a rule is considered. `field` of stage_changed is resolved at load (stage/status)."""

    kind: TriggerKind
    fields: tuple[str, ...] = ()
    field: str | None = None
    from_values: tuple[str, ...] = ()
    to_values: tuple[str, ...] = ()
    source: str | None = None
    levels: tuple[tuple[str, int], ...] = ()   # health_dropped: the score's levels, best first
    text: str = dataclasses.field(init=False, compare=False, repr=False)  # how a trace names it

    def __post_init__(self) -> None:
        text = self.kind.value
        if self.fields:
            text += " [" + ", ".join(self.fields) + "]"
        if self.kind is TriggerKind.STAGE_CHANGED:
            text += f" {self.field}" + (f" from {'/'.join(self.from_values)}" if self.from_values else "") \
                + (f" to {'/'.join(self.to_values)}" if self.to_values else "")
        if self.source:
            text += f" from '{self.source}'"
        if self.kind is TriggerKind.HEALTH_DROPPED:
            text += f" {self.field}"
        object.__setattr__(self, "text", text)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    entity: str
    triggers: tuple[TriggerSpec, ...]
    actions: tuple[ActionSpec, ...]
    when: Expression | None = None
    label: Label = Label(())
    description: str = ""
    is_enabled: bool = True
    priority: int = DEFAULT_PRIORITY
    position: int = 0
    location: Location = NOWHERE


_TRIGGER_KINDS = {"enum": [kind.value for kind in TriggerKind]}


_ONE_TRIGGER = either("string", _TRIGGER_KINDS, {
    "type": "object", "required": ["event"], "additionalProperties": False, "properties": {
        "event": _TRIGGER_KINDS, "fields": {"type": "array", "items": NAME, "minItems": 1},
        "field": NAME, "from": TEXT_OR_LIST, "to": TEXT_OR_LIST, "source": NAME,
        "score": NAME}})


_RULE = {"type": "object", "required": ["entity", "trigger", "actions"], "additionalProperties": False,
         "properties": {**COMMON, "enabled": {"type": "boolean"}, "priority": {"type": "integer"},
                        "trigger": either("array", {"type": "array", "items": _ONE_TRIGGER, "minItems": 1},
                                           _ONE_TRIGGER),
                        "when": EXPRESSION,
                        "actions": {**ACTIONS, "minItems": 1}}}


RULES_SCHEMA: dict[str, Any] = {"type": "object", "required": ["rules"], "additionalProperties": False,
                                "properties": {"rules": named_schema(_RULE)}}


def build_rules(documents: list[SourceDocument], model: Metamodel,
                vocabulary: Vocabulary) -> Built:
    """RuleSpecs from every `rules:` document, in run order. Needs routing and sources built first."""
    rules, errors = build_items("rules", Msg("rule"), documents, model, vocabulary, _build_rule)
    return dataclasses.replace(model, rules=tuple(sorted(rules, key=lambda rule: (rule.priority, rule.position)))), errors


def _build_rule(checker: Checker, name: str, data: dict[str, Any], path: PathKey,
                position: int) -> RuleSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("rule '{name}'", name=name))
    if entity is None:
        return None
    raw_triggers = data["trigger"] if isinstance(data["trigger"], list) else [data["trigger"]]
    trigger_path = path + ("trigger",)
    triggers = tuple(_build_trigger(checker, raw, trigger_path + (index,) if isinstance(data["trigger"], list)
                                    else trigger_path, entity) for index, raw in enumerate(raw_triggers))
    when = checker.expression(path + ("when",), data["when"], entity) if "when" in data else None
    actions = build_actions(checker, path + ("actions",), data["actions"], entity)
    return RuleSpec(name=name, entity=entity.name, triggers=triggers, actions=actions, when=when,
                    label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
                    description=str(data.get("description", "")), is_enabled=bool(data.get("enabled", True)),
                    priority=int(data.get("priority", DEFAULT_PRIORITY)), position=position,
                    location=checker.doc.where_key(path))


def _build_trigger(checker: Checker, raw: Any, path: PathKey, entity: EntitySpec) -> TriggerSpec:
    data = {"event": raw} if isinstance(raw, str) else raw
    kind = TriggerKind(data["event"])
    allowed = {TriggerKind.FIELD_CHANGED: {"fields"}, TriggerKind.STAGE_CHANGED: {"field", "from", "to"},
               TriggerKind.WEBHOOK_RECEIVED: {"source"}, TriggerKind.HEALTH_DROPPED: {"score"}}.get(kind, set())
    for option in set(data) - allowed - {"event"}:
        checker.error(path + (option,), Msg("'{option}' does not apply to a {kind} trigger", option=option,
                                            kind=kind.value),
                      Msg("{kind} takes: {options}", kind=kind.value,
                          options=", ".join(sorted(allowed)) or Msg("no options")), key=True)
    if kind is TriggerKind.FIELD_CHANGED:
        if "fields" not in data:
            checker.error(path, Msg("a field_changed trigger needs 'fields'"),
                          Msg("e.g. {{event: field_changed, fields: [budget]}}"))
        for index, name in enumerate(data.get("fields") or []):
            checker.field(path + ("fields", index), entity, name, Msg("watched field"), system_ok=True)
        return TriggerSpec(kind, fields=tuple(data.get("fields") or ()))
    if kind is TriggerKind.STAGE_CHANGED:
        field = data.get("field") or entity.stage_field
        if field is None:
            checker.error(path, Msg("{entity} has no stage or status field for stage_changed", entity=entity.name),
                          Msg("name the choice field: {{event: stage_changed, field: <field>}}"))
            return TriggerSpec(kind)
        spec = checker.field(path + ("field",), entity, field, Msg("stage field"), types=(FieldType.CHOICE,))
        for option in ("from", "to"):
            for value in texts(data.get(option)):
                checker.option(path + (option,), spec, value, Msg("'{option}' value", option=option))
        return TriggerSpec(kind, field=field, from_values=texts(data.get("from")), to_values=texts(data.get("to")))
    if kind is TriggerKind.HEALTH_DROPPED:
        scores = [score for score in checker.model.scores if score.entity == entity.name]
        wanted, chosen = data.get("score"), "score" in data
        named = [score for score in scores if score.name == wanted] if chosen else scores
        if len(named) != 1:
            checker.error(path, Msg("health_dropped needs one score of {entity}; '{score}' is not one",
                                    entity=entity.name, score=wanted) if chosen else
                          Msg("health_dropped needs one score of {entity}; it has {count}", entity=entity.name,
                              count=len(scores)),
                          Msg("declare it in a scores: document, or name it: {{event: health_dropped, score: <name>}}")
                          if not scores else did_you_mean(str(wanted), [s.name for s in scores]))
            return TriggerSpec(kind)
        return TriggerSpec(kind, field=named[0].field, levels=named[0].levels)
    if kind is TriggerKind.WEBHOOK_RECEIVED and "source" in data:
        known = [source.name for source in checker.model.sources]
        if data["source"] not in known:
            checker.error(path + ("source",), Msg("trigger names unknown source '{source}'", source=data["source"]),
                          Msg("{suggestion} Sources are declared in a sources: document.",
                              suggestion=did_you_mean(data["source"], known)))
        return TriggerSpec(kind, source=data["source"])
    return TriggerSpec(kind)

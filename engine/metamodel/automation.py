"""Automation in the blueprint: rules, routing policies and inbound sources.

Three document kinds, each holding named items, as a list (`- name: x`) or a mapping
(`x: {...}`):

- `rules:`   when a record changes (trigger) and a condition holds, run ordered actions;
- `routing:` who gets a record: policies with a strategy, pools of reps, caps, a backup
             and a fallback queue;
- `sources:` how an inbound webhook becomes a record: authentication, event id, field
             mapping with value maps, and test/spam filters.

Everything is checked when the blueprint loads, against what the blueprint itself knows
(entities, fields, options, policies, sources). Users, teams and secrets are runtime data
and are checked by the runtime (`crm doctor`). See docs/automation.md.

This module holds the specs, their JSON Schemas and the look-ups; the builders (YAML →
specs, with every check) are in automation_builders.py, on the located checks of checks.py.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Any, Union

from engine.metamodel.errors import Location
from engine.metamodel.model import NOWHERE, Expression, Label, Metamodel
from engine.metamodel.schema import EXPRESSION, LABEL, NAME

EXPRESSION_PREFIX = "="
DEFAULT_PRIORITY = 100
ANY_VALUE = "*"
# Placeholders in notification texts: {field}; {{ and }} stand for literal braces.
TEMPLATE_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
# Choice values that mean "this record is finished" when a policy does not say `open_when`.
CLOSED_LIKE = ("converted", "disqualified", "closed", "won", "lost", "closed_won", "closed_lost",
               "resolved", "cancelled", "canceled", "done", "archived", "rejected", "invalid")


# --------------------------------------------------------------------------- rules

class TriggerKind(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    FIELD_CHANGED = "field_changed"
    STAGE_CHANGED = "stage_changed"
    ASSIGNED = "assigned"
    WEBHOOK_RECEIVED = "webhook_received"
    IMPORT_ROW = "import_row"


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """When a rule is considered. `field` of stage_changed is resolved at load (stage/status)."""

    kind: TriggerKind
    fields: tuple[str, ...] = ()
    field: str | None = None
    from_values: tuple[str, ...] = ()
    to_values: tuple[str, ...] = ()
    source: str | None = None
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
        object.__setattr__(self, "text", text)


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """A value an action writes: a literal, or an expression (written with a leading '=')."""

    literal: Any = None
    expression: Expression | None = None

    @property
    def is_expression(self) -> bool:
        return self.expression is not None


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """Text with {field} placeholders, checked against the entity's fields at load."""

    text: str
    names: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SetAction:
    values: tuple[tuple[str, ValueSpec], ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class AddTagsAction:
    field: str
    values: tuple[str, ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class RemoveTagsAction:
    field: str
    values: tuple[str, ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class AssignAction:
    """Route the record; `policy` None means the first policy of the entity whose match holds."""

    policy: str | None
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class CreateRelatedAction:
    entity: str
    link_field: str
    values: tuple[tuple[str, ValueSpec], ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class TransitionAction:
    field: str
    to: str
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class NotifyAction:
    """`to` holds 'owner', 'manager' or usernames; resolved when the message is delivered."""

    channel: str
    template: TemplateSpec
    to: tuple[str, ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class WebhookAction:
    url: str | None
    url_env: str | None
    secret_env: str | None
    payload: tuple[tuple[str, ValueSpec], ...]
    location: Location = NOWHERE


ActionSpec = Union[SetAction, AddTagsAction, RemoveTagsAction, AssignAction, CreateRelatedAction,
                   TransitionAction, NotifyAction, WebhookAction]


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


# --------------------------------------------------------------------------- routing

class Strategy(enum.Enum):
    TERRITORY = "territory"
    INDUSTRY_POOL = "industry_pool"
    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    WEIGHTED = "weighted"

    @property
    def is_by_field(self) -> bool:
        """Territory and industry pools pick a pool by a field's value, then a rep inside it."""
        return self in (Strategy.TERRITORY, Strategy.INDUSTRY_POOL)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """Who may receive records: listed usernames and/or everyone of a team (optionally one role)."""

    key: str
    members: tuple[str, ...] = ()
    weights: tuple[tuple[str, int], ...] = ()
    team: str | None = None
    role: str | None = None
    location: Location = NOWHERE

    @property
    def is_empty(self) -> bool:
        return not self.members and self.team is None

    def weight(self, username: str) -> int:
        return dict(self.weights).get(username, 1)

    def describe(self) -> str:
        parts = []
        if self.members:
            parts.append("members " + ", ".join(self.members))
        if self.team is not None:
            parts.append(f"team {self.team}" + (f" ({self.role} only)" if self.role else ""))
        return "; ".join(parts) or "no members"


@dataclass(frozen=True, slots=True)
class RoutingPolicySpec:
    name: str
    entity: str
    strategy: Strategy
    pools: tuple[PoolSpec, ...]
    within: Strategy
    open_when: Expression
    match: Expression | None = None
    field: str | None = None
    priority: int = DEFAULT_PRIORITY
    position: int = 0
    cap: int | None = None
    caps: tuple[tuple[str, int], ...] = ()
    skip_on_leave: bool = True
    backup: str | None = None
    fallback_queue: str | None = None
    alert: str | None = None
    label: Label = Label(())
    description: str = ""
    location: Location = NOWHERE

    def pool(self, key: str) -> PoolSpec | None:
        return next((pool for pool in self.pools if pool.key == key), None)

    def cap_for(self, username: str) -> int | None:
        return dict(self.caps).get(username, self.cap)


# --------------------------------------------------------------------------- sources

class AuthKind(enum.Enum):
    NONE = "none"
    TOKEN = "token"
    HMAC = "hmac"


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """How a delivery proves where it comes from. Secrets live in environment variables.

    token: the secret must equal the `header` value (an optional 'Bearer ' is accepted) or
    the `query` parameter. hmac: `header` holds HMAC-`algorithm` of the body (or of
    `timestamp + "." + body` when `timestamp_header` is set), `encoding` hex or base64,
    optionally after `prefix` (e.g. 'sha256='); the timestamp (unix seconds) may differ
    from now by at most `max_skew_seconds`.
    """

    kind: AuthKind
    secret_env: str | None = None
    header: str | None = None
    query: str | None = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    max_skew_seconds: int = 300


@dataclass(frozen=True, slots=True)
class PayloadPath:
    """A path into a JSON payload: '$' (all of it), 'a.b', '$.a.b', 'items[0].value' or 'items.0'."""

    text: str
    parts: tuple[str | int, ...]

    def read(self, payload: Any) -> Any:
        """The value at this path, or None when any step is missing."""
        value = payload
        for part in self.parts:
            if isinstance(part, int) and isinstance(value, list) and -len(value) <= part < len(value):
                value = value[part]
            elif isinstance(value, dict) and str(part) in value:
                value = value[str(part)]
            else:
                return None
        return value


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One target field from the payload: `map` translates values ('*' catches the rest);
    `default` is used when the payload has no value."""

    field: str
    path: PayloadPath
    value_map: tuple[tuple[str, Any], ...] = ()
    default: Any = None
    location: Location = NOWHERE

    def value_from(self, payload: Any) -> Any:
        value = self.path.read(payload)
        if value is None or value == "":
            return self.default
        if self.value_map and not isinstance(value, (dict, list)):
            table = dict(self.value_map)
            value = table.get(str(value), table.get(ANY_VALUE, value))
        return list(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True, slots=True)
class SourceSpec:
    name: str
    entity: str
    auth: AuthSpec
    mapping: tuple[FieldMapping, ...]
    event_id: PayloadPath | None = None
    defaults: tuple[tuple[str, Any], ...] = ()
    test_filter: Expression | None = None
    spam_filter: Expression | None = None
    is_enabled: bool = True
    label: Label = Label(())
    description: str = ""
    location: Location = NOWHERE

    def map_payload(self, payload: Any) -> dict[str, Any]:
        """Field values for a new record: defaults, overlaid by every mapped value present."""
        values = dict(self.defaults)
        for mapping in self.mapping:
            value = mapping.value_from(payload)
            if value is not None:
                values[mapping.field] = value
        return values


# --------------------------------------------------------------------------- lookups

def rules_for(model: Metamodel, entity: str) -> tuple[RuleSpec, ...]:
    """The entity's rules in the order they run: priority (smaller first), then as written."""
    rules = [rule for rule in model.rules if rule.entity == entity]
    return tuple(sorted(rules, key=lambda rule: (rule.priority, rule.position)))


def policy_named(model: Metamodel, name: str) -> RoutingPolicySpec:
    for policy in model.routing:
        if policy.name == name:
            return policy  # type: ignore[no-any-return]
    raise KeyError(f"no routing policy '{name}' (known: {', '.join(p.name for p in model.routing)})")


def policies_for(model: Metamodel, entity: str) -> tuple[RoutingPolicySpec, ...]:
    """The entity's policies in the order they are tried: priority (smaller first), then as written."""
    policies = [policy for policy in model.routing if policy.entity == entity]
    return tuple(sorted(policies, key=lambda policy: (policy.priority, policy.position)))


def source_named(model: Metamodel, name: str) -> SourceSpec:
    for source in model.sources:
        if source.name == name:
            return source  # type: ignore[no-any-return]
    raise KeyError(f"no source '{name}' (known: {', '.join(s.name for s in model.sources)})")


# --------------------------------------------------------------------------- schemas

def _either(kind: str, then: dict[str, Any], otherwise: dict[str, Any]) -> dict[str, Any]:
    """`then` for a value of JSON type `kind`, else `otherwise` — unlike oneOf, errors stay precise."""
    return {"if": {"type": kind}, "then": then, "else": otherwise}


_SCALAR = {"type": ["string", "number", "boolean"]}
_TEXT_OR_LIST = _either("array", {"type": "array", "items": _SCALAR, "minItems": 1}, _SCALAR)
_USERNAME = {"type": "string", "pattern": "^[A-Za-z0-9_.@-]+$", "maxLength": 64}
_ENV = {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}
_HEADER = {"type": "string", "pattern": "^[A-Za-z0-9-]+$"}
_COMMON = {"name": NAME, "label": LABEL, "description": {"type": "string"}, "entity": NAME}
_VALUES = {"type": "object", "minProperties": 1, "propertyNames": NAME}
_TAG_LIST = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_TAGS = _either("array", _TAG_LIST, {"type": "object", "required": ["values"], "additionalProperties": False,
                                     "properties": {"field": NAME, "values": _TAG_LIST}})
_TRIGGER_KINDS = {"enum": [kind.value for kind in TriggerKind]}
_ONE_TRIGGER = _either("string", _TRIGGER_KINDS, {
    "type": "object", "required": ["event"], "additionalProperties": False, "properties": {
        "event": _TRIGGER_KINDS, "fields": {"type": "array", "items": NAME, "minItems": 1},
        "field": NAME, "from": _TEXT_OR_LIST, "to": _TEXT_OR_LIST, "source": NAME}})
_ACTION = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
           "properties": {
               "set": _VALUES,
               "add_tags": _TAGS,
               "remove_tags": _TAGS,
               "assign": _either("string", NAME, {"type": "object", "additionalProperties": False,
                                                  "properties": {"policy": NAME}}),
               "create_related": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
                                  "properties": {"entity": NAME, "link": NAME, "values": _VALUES}},
               "transition": _either("string", {"type": "string"}, {
                   "type": "object", "required": ["to"], "additionalProperties": False,
                   "properties": {"field": NAME, "to": {"type": "string"}}}),
               "notify": {"type": "object", "required": ["channel", "template"], "additionalProperties": False,
                          "properties": {"channel": NAME, "template": {"type": "string", "minLength": 1},
                                         "to": _either("array", {"type": "array", "items": _USERNAME,
                                                                 "minItems": 1}, _USERNAME)}},
               "webhook": {"type": "object", "additionalProperties": False,
                           "properties": {"url": {"type": "string", "pattern": "^https?://"}, "url_env": _ENV,
                                          "secret_env": _ENV, "payload": _VALUES}},
           }}
_RULE = {"type": "object", "required": ["entity", "trigger", "actions"], "additionalProperties": False,
         "properties": {**_COMMON, "enabled": {"type": "boolean"}, "priority": {"type": "integer"},
                        "trigger": _either("array", {"type": "array", "items": _ONE_TRIGGER, "minItems": 1},
                                           _ONE_TRIGGER),
                        "when": EXPRESSION,
                        "actions": {"type": "array", "items": _ACTION, "minItems": 1}}}
_MEMBER_LIST = {"type": "array", "items": _USERNAME, "uniqueItems": True}
_POOL = _either("array", _MEMBER_LIST, {
    "type": "object", "additionalProperties": False, "properties": {
        "members": _either("array", _MEMBER_LIST, {
            "type": "object", "propertyNames": _USERNAME, "additionalProperties": {"type": "integer", "minimum": 1}}),
        "team": {"type": "string", "minLength": 1}, "role": NAME}})
_POLICY = {"type": "object", "required": ["entity", "strategy"], "additionalProperties": False,
           "properties": {
               **_COMMON, "strategy": {"enum": [strategy.value for strategy in Strategy]}, "match": EXPRESSION,
               "priority": {"type": "integer"}, "field": NAME, "pool": _POOL,
               "pools": {"type": "object", "minProperties": 1, "additionalProperties": _POOL},
               "within": {"enum": ["round_robin", "least_loaded", "weighted"]},
               "cap": {"type": "integer", "minimum": 1},
               "caps": {"type": "object", "propertyNames": _USERNAME,
                        "additionalProperties": {"type": "integer", "minimum": 0}},
               "open_when": EXPRESSION, "skip_on_leave": {"type": "boolean"}, "backup": _USERNAME,
               "fallback_queue": NAME, "alert": NAME}}
_PATH = {"type": "string", "minLength": 1}
_MAPPING_ITEM = _either("string", _PATH, {"type": "object", "required": ["path"], "additionalProperties": False,
                                          "properties": {"path": _PATH, "map": {"type": "object"}, "default": {}}})
_SOURCE = {"type": "object", "required": ["entity", "auth", "mapping"], "additionalProperties": False,
           "properties": {
               **_COMMON, "enabled": {"type": "boolean"},
               "auth": {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
                   "type": {"enum": [kind.value for kind in AuthKind]}, "secret_env": _ENV, "header": _HEADER,
                   "query": NAME, "algorithm": {"enum": ["sha256", "sha1", "sha512"]},
                   "encoding": {"enum": ["hex", "base64"]}, "prefix": {"type": "string"},
                   "timestamp_header": _HEADER, "max_skew_seconds": {"type": "integer", "minimum": 1}}},
               "event_id": _PATH,
               "mapping": {"type": "object", "minProperties": 1, "additionalProperties": _MAPPING_ITEM},
               "defaults": {"type": "object"},
               "test_filter": EXPRESSION, "spam_filter": EXPRESSION}}


def _named(item: dict[str, Any]) -> dict[str, Any]:
    """Items as a list (each with `name`) or as a mapping name → item."""
    listed = {**item, "required": [*item["required"], "name"]}
    return _either("array", {"type": "array", "items": listed, "minItems": 1},
                   {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": item})


RULES_SCHEMA: dict[str, Any] = {"type": "object", "required": ["rules"], "additionalProperties": False,
                                "properties": {"rules": _named(_RULE)}}
ROUTING_SCHEMA: dict[str, Any] = {"type": "object", "required": ["routing"], "additionalProperties": False,
                                  "properties": {"routing": _named(_POLICY)}}
SOURCES_SCHEMA: dict[str, Any] = {"type": "object", "required": ["sources"], "additionalProperties": False,
                                  "properties": {"sources": _named(_SOURCE)}}

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
"""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Union

from .crossrefs import EXPRESSION_CONSTANTS, SYSTEM_FIELDS
from .errors import BlueprintError, Location, did_you_mean
from .expressions import ExpressionSyntaxError, parse_expression
from .model import NOWHERE, EntitySpec, Expression, FieldSpec, FieldType, Label, Metamodel
from .schema import EXPRESSION, LABEL, NAME
from .source import PathKey, SourceDocument

EXPRESSION_PREFIX = "="
DEFAULT_PRIORITY = 100
ANY_VALUE = "*"
# Placeholders in notification texts: {field}; {{ and }} stand for literal braces.
TEMPLATE_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
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


# --------------------------------------------------------------------------- shared checks

class _Checker:
    """Located checks shared by the three builders; collects errors for one document."""

    def __init__(self, doc: SourceDocument, model: Metamodel, functions: Collection[str],
                 errors: list[BlueprintError]) -> None:
        self.doc = doc
        self.model = model
        self.functions = functions
        self.errors = errors

    def error(self, path: PathKey, message: str, hint: str = "", *, key: bool = False,
              severity: str = "error") -> None:
        where = self.doc.where_key(path) if key else self.doc.where(path)
        self.errors.append(BlueprintError(where, path, message, hint, severity))

    def entity(self, path: PathKey, name: str, what: str) -> EntitySpec | None:
        if self.model.has_entity(name):
            return self.model.entity(name)
        self.error(path, f"{what} names unknown entity '{name}'", did_you_mean(name, self.model.entity_names()))
        return None

    def field(self, path: PathKey, entity: EntitySpec, name: str, what: str,
              types: Collection[FieldType] = (), system_ok: bool = False) -> FieldSpec | None:
        """The named field, or None after reporting it missing or of the wrong type."""
        if not entity.has_field(name):
            if system_ok and name in SYSTEM_FIELDS:
                return None
            known = [*entity.field_names(), *(SYSTEM_FIELDS if system_ok else ())]
            self.error(path, f"{what} '{name}' is not a field of '{entity.name}'",
                       f"{did_you_mean(name, known)} Declare it under {entity.name}.fields or correct the name.")
            return None
        spec = entity.field(name)
        if types and spec.value_type not in types:
            self.error(path, f"{what} '{name}' is a {spec.type.value} field",
                       "it needs a " + " or ".join(sorted(kind.value for kind in types)) + " field")
            return None
        return spec

    def option(self, path: PathKey, spec: FieldSpec | None, value: Any, what: str) -> None:
        if spec is not None and spec.choices and str(value) not in spec.choice_values():
            self.error(path, f"{what} '{value}' is not an option of {spec.name}",
                       did_you_mean(str(value), spec.choice_values()))

    def expression(self, path: PathKey, source: str, entity: EntitySpec) -> Expression | None:
        """Parse and name-check an expression over the entity's fields and system fields."""
        location = self.doc.where(path)
        try:
            expression = parse_expression(source, location)
        except ExpressionSyntaxError as exc:
            self.error(path, f"bad expression '{source}': {exc}",
                       "see docs/expressions.md for what an expression may contain")
            return None
        known = set(entity.field_names()) | set(SYSTEM_FIELDS)
        for name in sorted(expression.names - known - EXPRESSION_CONSTANTS):
            self.error(path, f"expression uses unknown field '{name}'",
                       f"{did_you_mean(name, known)} Fields of {entity.name} can be used by name.")
        for function in sorted(expression.functions - set(self.functions)):
            self.error(path, f"expression calls unknown function '{function}'",
                       f"{did_you_mean(function, self.functions)} See docs/expressions.md for the functions.")
        return expression

    def value(self, path: PathKey, raw: Any, source: EntitySpec, target: FieldSpec | None) -> ValueSpec:
        """A literal or '=expression' value; expressions read `source`, literals must fit `target`."""
        if isinstance(raw, str) and raw.startswith(EXPRESSION_PREFIX):
            return ValueSpec(expression=self.expression(path, raw[len(EXPRESSION_PREFIX):], source))
        if target is not None:
            self.check_literal(path, target, raw)
        return ValueSpec(literal=tuple(raw) if isinstance(raw, list) else raw)

    def check_literal(self, path: PathKey, spec: FieldSpec, raw: Any) -> None:
        kind = spec.value_type
        if raw is None:
            return
        if kind in (FieldType.TAGS, FieldType.MULTICHOICE):
            for item in raw if isinstance(raw, list) else [raw]:
                self.option(path, spec, item, "value")
        elif kind is FieldType.CHOICE:
            self.option(path, spec, raw, "value")
        elif kind is FieldType.BOOLEAN and not isinstance(raw, bool):
            self.error(path, f"{spec.name} is a yes/no field; '{raw}' is not true or false", "write true or false")
        elif kind in (FieldType.INTEGER, FieldType.DECIMAL, FieldType.MONEY) and (
                isinstance(raw, bool) or not isinstance(raw, (int, float))):
            self.error(path, f"{spec.name} is a number field; '{raw}' is not a number",
                       "write a number, or an expression starting with '='")

    def template(self, path: PathKey, text: str, entity: EntitySpec) -> TemplateSpec:
        names = set()
        known = set(entity.field_names()) | set(SYSTEM_FIELDS)
        for match in TEMPLATE_PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name is None:
                continue
            if not _FIELD_NAME.match(name.strip()):
                self.error(path, f"placeholder '{{{name}}}' is not a field name",
                           "placeholders are plain field names like {name}; write {{ and }} for braces")
            elif name.strip() not in known:
                self.error(path, f"placeholder '{{{name}}}' is not a field of '{entity.name}'",
                           did_you_mean(name.strip(), known))
            else:
                names.add(name.strip())
        return TemplateSpec(text, frozenset(names))


def _named_items(root: str, items: Any) -> Iterator[tuple[str, dict[str, Any], PathKey]]:
    """(name, item, path) for a list of named items or a mapping name → item."""
    if isinstance(items, list):
        for index, item in enumerate(items):
            yield item["name"], item, (root, index)
    else:
        for name, item in items.items():
            yield name, item, (root, name)


def _duplicate(checker: _Checker, seen: dict[str, Location], name: str, path: PathKey, what: str) -> bool:
    if name in seen:  # a mapping item is reported at its name, a list item where it starts
        checker.error(path, f"{what} '{name}' is declared twice", f"the first is at {seen[name]}; rename one",
                      key=isinstance(path[-1], str))
        return True
    seen[name] = checker.doc.where_key(path)
    return False


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(item) for item in (value if isinstance(value, list) else [value]))


# --------------------------------------------------------------------------- builders

def _build_items(key: str, what: str, documents: list[SourceDocument], model: Metamodel, functions: Collection[str],
                 build_one: Callable[..., Any]) -> tuple[list[Any], list[BlueprintError]]:
    """Every named item of the `key:` documents built by `build_one(checker, name, data, path, position)`
    (None: left out, its errors reported), with duplicate names reported where they stand."""
    errors: list[BlueprintError] = []
    items: list[Any] = []
    seen: dict[str, Location] = {}
    for doc in documents:
        checker = _Checker(doc, model, functions, errors)
        for name, data, path in _named_items(key, doc.data.get(key) or {}):
            if _duplicate(checker, seen, name, path, what):
                continue
            item = build_one(checker, name, data, path, len(items))
            if item is not None:
                items.append(item)
    return items, errors


# --------------------------------------------------------------------------- routing builder

def build_routing(documents: list[SourceDocument], model: Metamodel,
                  functions: Collection[str]) -> tuple[dict[str, Any], list[BlueprintError]]:
    """RoutingPolicySpecs from every `routing:` document, then checks across policies."""
    policies, errors = _build_items("routing", "routing policy", documents, model, functions, _build_policy)
    errors.extend(_check_policy_overlaps(policies))
    return {"routing": tuple(policies)}, errors


def _build_policy(checker: _Checker, name: str, data: dict[str, Any], path: PathKey,
                  position: int) -> RoutingPolicySpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], f"routing policy '{name}'")
    if entity is None:
        return None
    strategy = Strategy(data["strategy"])
    within = Strategy(data.get("within", "round_robin")) if strategy.is_by_field else strategy
    if "within" in data and not strategy.is_by_field:
        checker.error(path + ("within",), f"'within' does not apply to a {strategy.value} policy",
                      "it says how to choose inside the pool of a territory or industry_pool policy", key=True)
    pools = _build_pools(checker, name, data, path, entity, strategy)
    if within is Strategy.WEIGHTED:
        for pool in pools:
            if pool.members and not pool.weights:
                checker.error(path, f"policy '{name}' is weighted but pool '{pool.key}' gives no weights",
                              "write members as a mapping username → weight, e.g. members: {wang: 3, li: 1}")
    match = checker.expression(path + ("match",), data["match"], entity) if "match" in data else None
    open_when = _open_when(checker, data, path, entity, strategy, name)
    if "backup" not in data and "fallback_queue" not in data:
        checker.error(path, f"policy '{name}' has neither a backup rep nor a fallback queue",
                      "when nobody in the pool can take a record it would stay unassigned; add "
                      "'fallback_queue: <name>' and 'alert: <channel>'", key=True, severity="warning")
    return RoutingPolicySpec(
        name=name, entity=entity.name, strategy=strategy, pools=pools, within=within, open_when=open_when,
        match=match, field=data.get("field"), priority=int(data.get("priority", DEFAULT_PRIORITY)),
        position=position, cap=data.get("cap"), caps=tuple((data.get("caps") or {}).items()),
        skip_on_leave=bool(data.get("skip_on_leave", True)), backup=data.get("backup"),
        fallback_queue=data.get("fallback_queue"), alert=data.get("alert"),
        label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
        description=str(data.get("description", "")), location=checker.doc.where_key(path))


def _build_pools(checker: _Checker, name: str, data: dict[str, Any], path: PathKey, entity: EntitySpec,
                 strategy: Strategy) -> tuple[PoolSpec, ...]:
    if strategy.is_by_field:
        for option in ("field", "pools"):
            if option not in data:
                checker.error(path, f"a {strategy.value} policy needs '{option}'",
                              "e.g. field: region and pools: {east: {team: east}, '*': [wang]}", key=True)
        if "pool" in data:
            checker.error(path + ("pool",), f"a {strategy.value} policy has 'pools' (one per value), not 'pool'",
                          "move the members under pools: {<value>: ..., '*': ...}", key=True)
        spec = checker.field(path + ("field",), entity, data["field"], "routing field") if "field" in data else None
        pools = []
        for key, raw in (data.get("pools") or {}).items():
            if key != ANY_VALUE:
                checker.option(path + ("pools", key), spec, key, "pool for value")
            pools.append(_pool(checker, name, str(key), raw, path + ("pools", key), data))
        return tuple(pools)
    if "pools" in data or "field" in data:
        option = "pools" if "pools" in data else "field"
        checker.error(path + (option,), f"'{option}' applies to territory and industry_pool policies",
                      "a round_robin, least_loaded or weighted policy has one 'pool'", key=True)
    if "pool" not in data:
        checker.error(path, f"policy '{name}' needs a 'pool'", "e.g. pool: {team: east} or pool: [wang, li]",
                      key=True)
        return ()
    return (_pool(checker, name, ANY_VALUE, data["pool"], path + ("pool",), data),)


def _pool(checker: _Checker, policy: str, key: str, raw: Any, path: PathKey, data: dict[str, Any]) -> PoolSpec:
    raw = {"members": raw} if isinstance(raw, list) else raw
    members = raw.get("members") or []
    weights = tuple(members.items()) if isinstance(members, dict) else ()
    pool = PoolSpec(key, tuple(members), weights, raw.get("team"), raw.get("role"), checker.doc.where(path))
    roles = [role.name for role in checker.model.roles]
    if pool.role is not None and len(roles) > 1 and pool.role not in roles:
        checker.error(path + ("role",), f"pool '{key}' of policy '{policy}' names unknown role '{pool.role}'",
                      did_you_mean(pool.role, roles))
    if pool.is_empty:
        label = f"pool '{key}' of policy '{policy}'" if key != ANY_VALUE else f"the pool of policy '{policy}'"
        has_fallback = "backup" in data or "fallback_queue" in data
        checker.error(path, f"{label} has no members",
                      "records routed here go to the backup rep or the fallback queue" if has_fallback else
                      "records routed here would stay unassigned: add members, a team, or a fallback_queue",
                      severity="warning" if has_fallback else "error")
    return pool


def _open_when(checker: _Checker, data: dict[str, Any], path: PathKey, entity: EntitySpec,
               strategy: Strategy, name: str) -> Expression:
    """The declared `open_when`, or an explicit default built from the status/stage options."""
    if "open_when" in data:
        expression = checker.expression(path + ("open_when",), data["open_when"], entity)
        if expression is not None:
            return expression
    status = next((entity.field(n) for n in ("status", "stage") if entity.has_field(n)), None)
    closed = [value for value in (status.choice_values() if status else ()) if value in CLOSED_LIKE]
    source = f"{status.name} not in {closed!r}" if status is not None and closed else "True"
    uses_load = strategy is Strategy.LEAST_LOADED or data.get("within") == "least_loaded" or "cap" in data
    if source == "True" and uses_load and "open_when" not in data:
        checker.error(path, f"policy '{name}' counts open records but cannot tell which records are open",
                      "add open_when: \"<expression>\", e.g. open_when: \"status in ['new', 'contacted']\"",
                      key=True, severity="warning")
    return Expression(source, checker.doc.where_key(path), frozenset({status.name} if status and closed else ()),
                      frozenset())


def _check_policy_overlaps(policies: list[RoutingPolicySpec]) -> list[BlueprintError]:
    """Two policies of one entity with the same priority whose `match` can both hold are ambiguous;
    a policy after a catch-all (no `match`) of smaller priority is never used."""
    errors = []
    for index, first in enumerate(policies):
        for second in policies[index + 1:]:
            if first.entity != second.entity:
                continue
            if first.priority == second.priority and not _are_exclusive(first.match, second.match):
                errors.append(BlueprintError(
                    second.location, ("routing", second.name),
                    f"routing policies '{first.name}' and '{second.name}' for {first.entity} have the same "
                    f"priority {first.priority} and both can match the same record",
                    f"give one a smaller priority (it is tried first) or make their match conditions exclusive, "
                    f"e.g. source == 'douyin' vs source != 'douyin' (the other is at {first.location})"))
            for earlier, later in ((first, second), (second, first)):
                if earlier.match is None and earlier.priority < later.priority:
                    errors.append(BlueprintError(
                        later.location, ("routing", later.name),
                        f"routing policy '{later.name}' is never used: '{earlier.name}' (priority "
                        f"{earlier.priority}) has no match condition and takes every {earlier.entity} first",
                        f"give '{later.name}' a smaller priority than {earlier.priority}", severity="warning"))
    return errors


def _are_exclusive(first: Expression | None, second: Expression | None) -> bool:
    """True only when the two conditions provably never hold together (conservative)."""
    if first is None or second is None:
        return False
    a, b = _constraints(first), _constraints(second)
    for name in set(a) & set(b):
        (values_a, negated_a), (values_b, negated_b) = a[name], b[name]
        if not negated_a and not negated_b and not values_a & values_b:
            return True
        if negated_a != negated_b and (values_b <= values_a if negated_a else values_a <= values_b):
            return True
    return False


def _constraints(expression: Expression) -> dict[str, tuple[frozenset[Any], bool]]:
    """name → (values, negated) for the `name == v`, `name in [..]`, `any_of(name, ..)`,
    `!=` and `not in` parts of a top-level `and`; anything else says nothing."""
    body = ast.parse(expression.source, mode="eval").body
    parts = body.values if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And) else [body]
    found: dict[str, tuple[frozenset[Any], bool]] = {}
    for part in parts:
        constraint = _constraint(part)
        if constraint is not None and constraint[0] not in found:
            found[constraint[0]] = constraint[1:]
    return found


def _constraint(node: ast.expr) -> tuple[str, frozenset[Any], bool] | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "any_of" and node.args:
        name, rest = node.args[0], node.args[1:]
        values = _literals(*rest[0].elts) if len(rest) == 1 and isinstance(rest[0], ast.List) else _literals(*rest)
        return (name.id, values, False) if isinstance(name, ast.Name) and values is not None else None
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return None
    left, right, op = node.left, node.comparators[0], node.ops[0]
    if isinstance(right, ast.Name) and isinstance(op, (ast.Eq, ast.NotEq)):
        left, right = right, left
    if not isinstance(left, ast.Name):
        return None
    values = _literals(*(right.elts if isinstance(right, (ast.List, ast.Tuple)) else [right])) \
        if isinstance(op, (ast.In, ast.NotIn)) else _literals(right)
    if values is None or not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
        return None
    return left.id, values, isinstance(op, (ast.NotEq, ast.NotIn))


def _literals(*nodes: ast.expr) -> frozenset[Any] | None:
    if not nodes or not all(isinstance(node, ast.Constant) for node in nodes):
        return None
    return frozenset(node.value for node in nodes if isinstance(node, ast.Constant))


# --------------------------------------------------------------------------- sources builder

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_payload_path(text: str) -> PayloadPath:
    """'$.a.b', 'a.b', 'items[0].id' or 'items.0.id' → PayloadPath; ValueError when malformed."""
    rest = text.strip()
    rest = rest[1:] if rest.startswith("$") else rest
    rest = rest[1:] if rest.startswith(".") else rest
    parts: list[str | int] = []
    position = 0
    while position < len(rest):
        match = _PATH_PART.match(rest, position)
        if match is None:
            raise ValueError(f"cannot read '{text}' as a path")
        name, index = match.groups()
        parts.append(int(index) if index is not None else int(name) if name.isdigit() else name)
        position = match.end()
        if position < len(rest) and rest[position] == ".":
            position += 1
            if position == len(rest):
                raise ValueError(f"'{text}' ends with a dot")
    return PayloadPath(text, tuple(parts))


def build_sources(documents: list[SourceDocument], model: Metamodel,
                  functions: Collection[str]) -> tuple[dict[str, Any], list[BlueprintError]]:
    """SourceSpecs (inbound webhooks) from every `sources:` document."""
    sources, errors = _build_items("sources", "source", documents, model, functions,
                                   lambda checker, name, data, path, _: _build_source(checker, name, data, path))
    return {"sources": tuple(sources)}, errors


def _path(checker: _Checker, path: PathKey, text: str) -> PayloadPath | None:
    try:
        return parse_payload_path(text)
    except ValueError as exc:
        checker.error(path, str(exc), "write a path like $.event.id, contact.mobile or items[0].value")
        return None


def _build_source(checker: _Checker, name: str, data: dict[str, Any], path: PathKey) -> SourceSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], f"source '{name}'")
    if entity is None:
        return None
    auth = _build_auth(checker, name, data["auth"], path + ("auth",))
    mapping = []
    for field, raw in data["mapping"].items():
        item_path = path + ("mapping", field)
        raw = {"path": raw} if isinstance(raw, str) else raw
        spec = checker.field(item_path, entity, field, "mapped field") if field != "created_at" else None
        payload_path = _path(checker, item_path + ("path",) if "path" in raw else item_path, raw["path"])
        for original, value in (raw.get("map") or {}).items():
            if spec is not None:
                checker.check_literal(item_path + ("map", original), spec, value)
        if raw.get("default") is not None and spec is not None:
            checker.check_literal(item_path + ("default",), spec, raw["default"])
        if payload_path is not None:
            mapping.append(FieldMapping(field, payload_path, tuple((str(k), v) for k, v in (raw.get("map") or {}).items()),
                                        raw.get("default"), checker.doc.where_key(item_path)))
    for field, value in (data.get("defaults") or {}).items():
        spec = checker.field(path + ("defaults", field), entity, field, "default field")
        if spec is not None:
            checker.check_literal(path + ("defaults", field), spec, value)
    event_id = _path(checker, path + ("event_id",), data["event_id"]) if "event_id" in data else None
    if "event_id" not in data:
        checker.error(path, f"source '{name}' has no event_id",
                      "without it a re-delivered event is recognised only by the entity's dedup keys; "
                      "add event_id: <path to the sender's event or submission id>", key=True, severity="warning")
    filters = {option: checker.expression(path + (option,), data[option], entity)
               for option in ("test_filter", "spam_filter") if option in data}
    return SourceSpec(
        name=name, entity=entity.name, auth=auth, mapping=tuple(mapping), event_id=event_id,
        defaults=tuple((data.get("defaults") or {}).items()), test_filter=filters.get("test_filter"),
        spam_filter=filters.get("spam_filter"), is_enabled=bool(data.get("enabled", True)),
        label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
        description=str(data.get("description", "")), location=checker.doc.where_key(path))


def _build_auth(checker: _Checker, name: str, data: dict[str, Any], path: PathKey) -> AuthSpec:
    kind = AuthKind(data["type"])
    if kind is AuthKind.NONE:
        checker.error(path, f"source '{name}' accepts deliveries from anyone who knows its URL",
                      "use type: token or type: hmac with a secret_env", severity="warning")
        return AuthSpec(kind)
    if "secret_env" not in data:
        checker.error(path, f"{kind.value} authentication needs 'secret_env'",
                      "name the environment variable holding the secret, e.g. secret_env: CRM_DOUYIN_SECRET")
    if kind is AuthKind.TOKEN and "header" not in data and "query" not in data:
        checker.error(path, "token authentication needs 'header' or 'query'",
                      "say where the token comes: header: X-Token, or query: token for ?token=…")
    if kind is AuthKind.HMAC:
        if "header" not in data:
            checker.error(path, "hmac authentication needs 'header' (where the signature comes)",
                          "e.g. header: X-Signature")
        if "query" in data:
            checker.error(path + ("query",), "'query' applies to token authentication", "remove it", key=True)
    elif any(option in data for option in ("timestamp_header", "algorithm", "encoding", "prefix")):
        checker.error(path, "timestamp_header, algorithm, encoding and prefix apply to hmac authentication",
                      "use type: hmac, or remove them", key=True)
    return AuthSpec(kind, data.get("secret_env"), data.get("header"), data.get("query"),
                    data.get("algorithm", "sha256"), data.get("encoding", "hex"), data.get("prefix", ""),
                    data.get("timestamp_header"), int(data.get("max_skew_seconds", 300)))


# --------------------------------------------------------------------------- rules builder

def build_rules(documents: list[SourceDocument], model: Metamodel,
                functions: Collection[str]) -> tuple[dict[str, Any], list[BlueprintError]]:
    """RuleSpecs from every `rules:` document, in run order. Needs routing and sources built first."""
    rules, errors = _build_items("rules", "rule", documents, model, functions, _build_rule)
    return {"rules": tuple(sorted(rules, key=lambda rule: (rule.priority, rule.position)))}, errors


def _build_rule(checker: _Checker, name: str, data: dict[str, Any], path: PathKey,
                position: int) -> RuleSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], f"rule '{name}'")
    if entity is None:
        return None
    raw_triggers = data["trigger"] if isinstance(data["trigger"], list) else [data["trigger"]]
    trigger_path = path + ("trigger",)
    triggers = tuple(_build_trigger(checker, raw, trigger_path + (index,) if isinstance(data["trigger"], list)
                                    else trigger_path, entity) for index, raw in enumerate(raw_triggers))
    when = checker.expression(path + ("when",), data["when"], entity) if "when" in data else None
    actions = []
    for index, raw in enumerate(data["actions"]):
        (kind, body), = raw.items()
        action = _ACTION_BUILDERS[kind](checker, body, path + ("actions", index, kind), entity)
        if action is not None:
            actions.append(action)
    return RuleSpec(name=name, entity=entity.name, triggers=triggers, actions=tuple(actions), when=when,
                    label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
                    description=str(data.get("description", "")), is_enabled=bool(data.get("enabled", True)),
                    priority=int(data.get("priority", DEFAULT_PRIORITY)), position=position,
                    location=checker.doc.where_key(path))


def _build_trigger(checker: _Checker, raw: Any, path: PathKey, entity: EntitySpec) -> TriggerSpec:
    data = {"event": raw} if isinstance(raw, str) else raw
    kind = TriggerKind(data["event"])
    allowed = {TriggerKind.FIELD_CHANGED: {"fields"}, TriggerKind.STAGE_CHANGED: {"field", "from", "to"},
               TriggerKind.WEBHOOK_RECEIVED: {"source"}}.get(kind, set())
    for option in set(data) - allowed - {"event"}:
        checker.error(path + (option,), f"'{option}' does not apply to a {kind.value} trigger",
                      f"{kind.value} takes: {', '.join(sorted(allowed)) or 'no options'}", key=True)
    if kind is TriggerKind.FIELD_CHANGED:
        if "fields" not in data:
            checker.error(path, "a field_changed trigger needs 'fields'", "e.g. {event: field_changed, fields: [budget]}")
        for index, name in enumerate(data.get("fields") or []):
            checker.field(path + ("fields", index), entity, name, "watched field", system_ok=True)
        return TriggerSpec(kind, fields=tuple(data.get("fields") or ()))
    if kind is TriggerKind.STAGE_CHANGED:
        field = data.get("field") or next((n for n in ("stage", "status") if entity.has_field(n)), None)
        if field is None:
            checker.error(path, f"{entity.name} has no stage or status field for stage_changed",
                          "name the choice field: {event: stage_changed, field: <field>}")
            return TriggerSpec(kind)
        spec = checker.field(path + ("field",), entity, field, "stage field", types=(FieldType.CHOICE,))
        for option in ("from", "to"):
            for value in _texts(data.get(option)):
                checker.option(path + (option,), spec, value, f"'{option}' value")
        return TriggerSpec(kind, field=field, from_values=_texts(data.get("from")), to_values=_texts(data.get("to")))
    if kind is TriggerKind.WEBHOOK_RECEIVED and "source" in data:
        known = [source.name for source in checker.model.sources]
        if data["source"] not in known:
            checker.error(path + ("source",), f"trigger names unknown source '{data['source']}'",
                          did_you_mean(data["source"], known) + " Sources are declared in a sources: document.")
        return TriggerSpec(kind, source=data["source"])
    return TriggerSpec(kind)


def _set(checker: _Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> SetAction:
    values = []
    for field, raw in body.items():
        if field in SYSTEM_FIELDS:
            checker.error(path + (field,), f"a rule cannot set the system field '{field}'",
                          "use an assign action to change the owner" if field == "owner" else "remove it", key=True)
            continue
        spec = checker.field(path + (field,), entity, field, "field to set")
        if spec is not None and spec.type is FieldType.COMPUTED:
            checker.error(path + (field,), f"'{field}' is computed from its expression and cannot be set",
                          "set the fields it is computed from instead", key=True)
        values.append((field, checker.value(path + (field,), raw, entity, spec)))
    return SetAction(tuple(values), checker.doc.where_key(path))


def _tags(checker: _Checker, body: Any, path: PathKey, entity: EntitySpec) -> tuple[str, tuple[str, ...]]:
    values_path = path if isinstance(body, list) else path + ("values",)
    body = {"values": body} if isinstance(body, list) else body
    field = body.get("field") or next((f.name for f in entity.fields if f.type is FieldType.TAGS), "tags")
    spec = checker.field(path + ("field",) if "field" in body else path, entity, field, "tags field",
                         types=(FieldType.TAGS, FieldType.MULTICHOICE))
    for index, value in enumerate(body["values"]):
        checker.option(values_path + (index,), spec, value, "tag")
    return field, tuple(str(value) for value in body["values"])


def _add_tags(checker: _Checker, body: Any, path: PathKey, entity: EntitySpec) -> AddTagsAction:
    return AddTagsAction(*_tags(checker, body, path, entity), checker.doc.where_key(path))


def _remove_tags(checker: _Checker, body: Any, path: PathKey, entity: EntitySpec) -> RemoveTagsAction:
    return RemoveTagsAction(*_tags(checker, body, path, entity), checker.doc.where_key(path))


def _assign(checker: _Checker, body: Any, path: PathKey, entity: EntitySpec) -> AssignAction:
    policy = body if isinstance(body, str) else body.get("policy")
    policy = None if policy == "auto" else policy
    mine = [p.name for p in checker.model.routing if p.entity == entity.name]
    if policy is not None and policy not in mine:
        others = [p.entity for p in checker.model.routing if p.name == policy]
        checker.error(path, f"assign names unknown routing policy '{policy}'" if not others else
                      f"routing policy '{policy}' routes {others[0]}, not {entity.name}",
                      did_you_mean(policy, mine) + " Policies are declared in a routing: document.")
    elif policy is None and not mine:
        checker.error(path, f"assign picks a routing policy for {entity.name}, but none is declared",
                      "declare one in a routing: document (entity: " + entity.name + ")")
    return AssignAction(policy, checker.doc.where_key(path))


def _create_related(checker: _Checker, body: dict[str, Any], path: PathKey,
                    entity: EntitySpec) -> CreateRelatedAction | None:
    target = checker.entity(path + ("entity",), body["entity"], "create_related")
    if target is None:
        return None
    link = checker.field(path + ("link",), target, body["link"], "link field", types=(FieldType.LINK,))
    if link is not None and link.link_entity != entity.name:
        checker.error(path + ("link",), f"{target.name}.{link.name} links to {link.link_entity}, not {entity.name}",
                      did_you_mean(entity.name, [f.name for f in target.fields if f.link_entity == entity.name]))
    values = []
    for field, raw in (body.get("values") or {}).items():
        spec = checker.field(path + ("values", field), target, field, "field")
        values.append((field, checker.value(path + ("values", field), raw, entity, spec)))
    for spec in target.fields:
        if spec.is_required and spec.default is None and spec.default_expression is None \
                and spec.name not in dict(values) and spec.name != body["link"]:
            checker.error(path, f"{target.name} requires '{spec.name}', which create_related does not give",
                          f"add it under values: {{{spec.name}: …}}")
    return CreateRelatedAction(target.name, body["link"], tuple(values), checker.doc.where_key(path))


def _transition(checker: _Checker, body: Any, path: PathKey, entity: EntitySpec) -> TransitionAction | None:
    to_path = path if isinstance(body, str) else path + ("to",)
    body = {"to": body} if isinstance(body, str) else body
    field = body.get("field") or next((n for n in ("stage", "status") if entity.has_field(n)), None)
    if field is None:
        checker.error(path, f"{entity.name} has no stage or status field to transition",
                      "name the choice field: transition: {field: <field>, to: <option>}")
        return None
    spec = checker.field(path + ("field",) if "field" in body else path, entity, field, "stage field",
                         types=(FieldType.CHOICE,))
    checker.option(to_path, spec, body["to"], "target stage")
    return TransitionAction(field, str(body["to"]), checker.doc.where_key(path))


def _notify(checker: _Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> NotifyAction:
    template = checker.template(path + ("template",), body["template"], entity)
    return NotifyAction(body["channel"], template, _texts(body.get("to", "owner")), checker.doc.where_key(path))


def _webhook(checker: _Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> WebhookAction:
    if ("url" in body) == ("url_env" in body):
        checker.error(path, "a webhook action needs exactly one of 'url' and 'url_env'",
                      "prefer url_env: the environment variable holding the address")
    payload = tuple((key, checker.value(path + ("payload", key), raw, entity, None))
                    for key, raw in (body.get("payload") or {}).items())
    return WebhookAction(body.get("url"), body.get("url_env"), body.get("secret_env"), payload,
                         checker.doc.where_key(path))


_ACTION_BUILDERS: dict[str, Any] = {
    "set": _set, "add_tags": _add_tags, "remove_tags": _remove_tags, "assign": _assign,
    "create_related": _create_related, "transition": _transition, "notify": _notify, "webhook": _webhook,
}


"""The one action vocabulary: what a rule, an SLA checkpoint or a cadence step may do.

`set`, `add_tags`/`remove_tags`, `assign`/`reassign`, `create_related`, `update_related`,
`transition`, `notify` and `webhook` are the same specs with the same options wherever they
are written; `build_actions` checks them at load with file:line. See docs/automation.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from engine.metamodel.channels import RECIPIENT
from engine.metamodel.checks import Checker, texts
from engine.metamodel.crossrefs import SYSTEM_FIELDS
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import TemplateSpec, ValueSpec
from engine.metamodel.schema import ENV_NAME, NAME, USERNAME, VALUES, either
from engine.metamodel.source import PathKey


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


_TAG_LIST = {"type": "array", "items": {"type": "string"}, "minItems": 1}


_TAGS = either("array", _TAG_LIST, {"type": "object", "required": ["values"], "additionalProperties": False,
                                     "properties": {"field": NAME, "values": _TAG_LIST}})


_ACTION = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
           "properties": {
               "set": VALUES,
               "add_tags": _TAGS,
               "remove_tags": _TAGS,
               "assign": either("string", NAME, {"type": "object", "additionalProperties": False,
                                                  "properties": {"policy": NAME}}),
               "create_related": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
                                  "properties": {"entity": NAME, "link": NAME, "values": VALUES}},
               "transition": either("string", {"type": "string"}, {
                   "type": "object", "required": ["to"], "additionalProperties": False,
                   "properties": {"field": NAME, "to": {"type": "string"}}}),
               "notify": {"type": "object", "required": ["channel", "template"], "additionalProperties": False,
                          "properties": {"channel": NAME, "template": {"type": "string", "minLength": 1},
                                         "to": either("array", {"type": "array", "items": USERNAME,
                                                                 "minItems": 1}, USERNAME)}},
               "webhook": {"type": "object", "additionalProperties": False,
                           "properties": {"url": {"type": "string", "pattern": "^https?://"}, "url_env": ENV_NAME,
                                          "secret_env": ENV_NAME, "payload": VALUES}},
           }}


def _set(checker: Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> SetAction:
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


def _tags(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> tuple[str, tuple[str, ...]]:
    values_path = path if isinstance(body, list) else path + ("values",)
    body = {"values": body} if isinstance(body, list) else body
    field = body.get("field") or next((f.name for f in entity.fields if f.type is FieldType.TAGS), "tags")
    spec = checker.field(path + ("field",) if "field" in body else path, entity, field, "tags field",
                         types=(FieldType.TAGS, FieldType.MULTICHOICE))
    for index, value in enumerate(body["values"]):
        checker.option(values_path + (index,), spec, value, "tag")
    return field, tuple(str(value) for value in body["values"])


def _add_tags(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> AddTagsAction:
    return AddTagsAction(*_tags(checker, body, path, entity), checker.doc.where_key(path))


def _remove_tags(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> RemoveTagsAction:
    return RemoveTagsAction(*_tags(checker, body, path, entity), checker.doc.where_key(path))


def _assign(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> AssignAction:
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


def _create_related(checker: Checker, body: dict[str, Any], path: PathKey,
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


def _transition(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> TransitionAction | None:
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


def _notify(checker: Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> NotifyAction:
    template = checker.template(path + ("template",), body["template"], entity)
    return NotifyAction(body["channel"], template, texts(body.get("to", "owner")), checker.doc.where_key(path))


def _webhook(checker: Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> WebhookAction:
    if ("url" in body) == ("url_env" in body):
        checker.error(path, "a webhook action needs exactly one of 'url' and 'url_env'",
                      "prefer url_env: the environment variable holding the address")
    payload = tuple((key, checker.value(path + ("payload", key), raw, entity, None))
                    for key, raw in (body.get("payload") or {}).items())
    return WebhookAction(body.get("url"), body.get("url_env"), body.get("secret_env"), payload,
                         checker.doc.where_key(path))


ACTION_BUILDERS: dict[str, Any] = {
    "set": _set, "add_tags": _add_tags, "remove_tags": _remove_tags, "assign": _assign,
    "create_related": _create_related, "transition": _transition, "notify": _notify, "webhook": _webhook,
}


@dataclass(frozen=True, slots=True)
class NotifyStep:
    channel: str
    to: tuple[str, ...]
    template: str


@dataclass(frozen=True, slots=True)
class ReassignStep:
    backup: str | None = None  # a username; None: the owner's manager


@dataclass(frozen=True, slots=True)
class SetStep:
    values: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class TagStep:
    field: str
    add: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreateStep:
    """Create a related record (e.g. a to-do activity) linking back through `link`."""

    entity: str
    link: str
    values: tuple[tuple[str, Any], ...]


TimeAction = NotifyStep | ReassignStep | SetStep | TagStep | CreateStep


_LITERALS = {"type": "object", "minProperties": 1, "propertyNames": NAME}


_STEP = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False, "properties": {
    "notify": {"type": "object", "required": ["channel", "template"], "additionalProperties": False,
               "properties": {"channel": NAME, "template": NAME,
                              "to": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    "reassign": {"type": "object", "additionalProperties": False,
                 "properties": {"backup": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]+$"}}},
    "set": _LITERALS,
    "tag": {"type": "object", "required": ["add"], "additionalProperties": False,
            "properties": {"field": NAME, "add": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    "create": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
               "properties": {"entity": NAME, "link": NAME, "values": _LITERALS}},
}}


_STEPS = {"type": "array", "items": _STEP}


def build_steps(checker: Checker, path: PathKey, raw: list[dict[str, Any]], entity: EntitySpec) -> tuple[TimeAction, ...]:
    model = checker.model
    actions: list[TimeAction] = []
    for index, item in enumerate(raw):
        (verb, body), = item.items()
        where = path + (index, verb)
        if verb == "notify":
            channels = {spec.name for spec in model.channels}  # type: ignore[attr-defined]
            if body["channel"] not in channels:
                checker.error(where + ("channel",), f"unknown channel '{body['channel']}'",
                              did_you_mean(body["channel"], channels))
            templates = {spec.name for spec in model.templates}  # type: ignore[attr-defined]
            if body["template"] not in templates:
                checker.error(where + ("template",), f"unknown message template '{body['template']}'",
                              f"{did_you_mean(body['template'], templates)} Declare it under templates: in a "
                              "channels document.")
            for position, person in enumerate(body.get("to") or ["owner"]):
                if not RECIPIENT.match(person):
                    checker.error(where + ("to", position), f"unknown recipient '{person}'",
                                  "write owner, owner.manager, backup, all, role:NAME, team:NAME or user:NAME")
            actions.append(NotifyStep(body["channel"], tuple(body.get("to") or ["owner"]), body["template"]))
        elif verb == "reassign":
            actions.append(ReassignStep(body.get("backup")))
        elif verb == "set":
            for name, value in body.items():
                spec = checker.field(where + (name,), entity, name, "set field")
                if spec is not None:
                    checker.check_literal(where + (name,), spec, value)
            actions.append(SetStep(tuple(body.items())))
        elif verb == "tag":
            name = body.get("field", "tags")
            spec = checker.field(where, entity, name, "tag field", (FieldType.TAGS, FieldType.MULTICHOICE))
            for tag in body["add"]:
                checker.option(where + ("add",), spec, tag, "tag")
            actions.append(TagStep(name, tuple(body["add"])))
        else:
            related = checker.entity(where + ("entity",), body["entity"], "create")
            if related is not None:
                link = checker.field(where + ("link",), related, body["link"], "link", (FieldType.LINK,))
                if link is not None and link.link_entity != entity.name:
                    checker.error(where + ("link",), f"'{body['link']}' does not link {related.name} to {entity.name}")
                for name, value in (body.get("values") or {}).items():
                    spec = checker.field(where + ("values", name), related, name, "field")
                    if spec is not None:
                        checker.check_literal(where + ("values", name), spec, value)
            actions.append(CreateStep(body["entity"], body["link"], tuple((body.get("values") or {}).items())))
    return tuple(actions)

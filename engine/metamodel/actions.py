"""The one action vocabulary: what a rule, an SLA checkpoint or a cadence step may do.

`set`, `add_tags`/`remove_tags`, `assign`/`reassign`, `create_related`, `update_related`,
`transition`, `notify`, `webhook` and `request_approval` are the same specs with the same options wherever they
are written — a rule's `actions:`, an SLA's `on_warning:`/`on_breach:`/`on_escalation:`,
a cadence step's `actions:` — and `build_actions` checks them at load with file:line.

Values are literals or expressions (a leading '='), read from the record the action runs
on. A verb a plugin provides (`crm_actions`, engine/plugins/hookspecs.py) is a `PluginAction`:
its body is checked against the JSON Schema the plugin declares (passed in through the
`Vocabulary`, so the metamodel never asks the plugin manager), its top-level options may be
expressions too, and the runtime hands the computed options to the plugin. Notification text is Jinja2 in both its forms — inline (`text:`) or a named template
(`template:`) — with the same context: `record`, `owner`, `manager`, `url`, `now`, and
`rule`, `sla` or `cadence` for whatever ran it. See docs/automation.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from engine.metamodel.checks import Checker, texts
from engine.metamodel.crossrefs import SYSTEM_FIELDS
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean, unknown_name_hint
from engine.metamodel.expressions import Expression, ValueSpec
from engine.metamodel.messages import Msg
from engine.metamodel.related import RELATED_SCHEMA, RelatedSpec, build_related, related_mode
from engine.metamodel.schema import ENV_NAME, NAME, USERNAME, VALUES, either
from engine.metamodel.source import PathKey

# who a notification goes to, and who an assignment may pick
RECIPIENT = re.compile(r"^(owner|owner\.manager|manager|backup|all|(role|user|team):[A-Za-z0-9_.@-]+)$")
ASSIGNEE = re.compile(r"^(owner\.manager|manager|(user:)?[A-Za-z0-9_.@-]+)$")
MAX_RELATED_UPDATES = 500  # update_related touches at most this many records per run


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
    """Give the record an owner: through routing `policy` (None: the entity's first policy whose
    match holds), or to the first of `to` who is active and not on leave (`user:NAME`/NAME, or
    `owner.manager`). `reassign` means away from the current owner: they are never chosen."""

    policy: str | None = None
    to: tuple[str, ...] = ()
    reassign: bool = False
    location: Location = NOWHERE

    @property
    def is_routed(self) -> bool:
        return not self.to


@dataclass(frozen=True, slots=True)
class CreateRelatedAction:
    entity: str
    link_field: str
    values: tuple[tuple[str, ValueSpec], ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class UpdateRelatedAction:
    """Change records related to this one: the record its link `via` points to (`parent`),
    the records of `entity` whose link `via` points to this one (`children`), or those whose
    `via` equals this record's own `via` (`siblings`: e.g. the other opportunities of the
    ticket's account). `where` reads each related record; values read this one. `values_if_empty`
    are written only where the related record's field is still empty (a first touch). `own`:
    siblings through a link of this record named differently (ticket.customer ↔ opportunity.account).
    `unless`: records related to this one whose existence skips the action (another open
    delivery ticket of the customer keeps the flag)."""

    entity: str
    via: str
    mode: str  # parent | children | siblings
    values: tuple[tuple[str, ValueSpec], ...] = ()
    values_if_empty: tuple[tuple[str, ValueSpec], ...] = ()
    where: Expression | None = None
    location: Location = NOWHERE
    own: str | None = None
    unless: RelatedSpec | None = None


@dataclass(frozen=True, slots=True)
class TransitionAction:
    field: str
    to: str
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class NotifyAction:
    """A message to `channel` for the people `to` names (resolved to mentions when queued):
    inline Jinja2 `text`, or the named `template` of a channels document."""

    channel: str
    to: tuple[str, ...]
    text: str | None = None
    template: str | None = None
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class RequestApprovalAction:
    """Open a request of the declared approval `approval` for the record (unless one is pending,
    or one granted still covers its values); `reason` is the request's note, text or '=expression'."""

    approval: str
    reason: ValueSpec | None = None
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class WebhookAction:
    url: str | None
    url_env: str | None
    secret_env: str | None
    payload: tuple[tuple[str, ValueSpec], ...]
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class PluginAction:
    """A verb an installed plugin provides, used on `entity`: its options as written (literals,
    or expressions read from the record), checked at load against the plugin's schema."""

    verb: str
    entity: str
    values: tuple[tuple[str, ValueSpec], ...]
    location: Location = NOWHERE


ActionSpec = Union[SetAction, AddTagsAction, RemoveTagsAction, AssignAction, CreateRelatedAction,
                   UpdateRelatedAction, TransitionAction, NotifyAction, WebhookAction, RequestApprovalAction,
                   PluginAction]


# --------------------------------------------------------------------------- schema

_TAG_LIST = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_TAGS = either("array", _TAG_LIST, {"type": "object", "required": ["values"], "additionalProperties": False,
                                    "properties": {"field": NAME, "values": _TAG_LIST}})
_PEOPLE = either("array", {"type": "array", "items": {"type": "string"}, "minItems": 1}, {"type": "string"})
_ASSIGN = either("string", NAME, {"type": "object", "additionalProperties": False,
                                  "properties": {"policy": NAME, "to": _PEOPLE, "backup": USERNAME}})
ACTION: dict[str, Any] = {
    "type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
        "set": VALUES,
        "add_tags": _TAGS,
        "remove_tags": _TAGS,
        "assign": _ASSIGN,
        "reassign": _ASSIGN,
        "create_related": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
                           "properties": {"entity": NAME, "link": NAME, "values": VALUES}},
        "update_related": {"type": "object", "additionalProperties": False,
                           "properties": {"link": NAME, "entity": NAME, "via": NAME, "where": {"type": "string"},
                                          "set": VALUES, "set_if_empty": VALUES, "on": NAME,
                                          "unless": RELATED_SCHEMA}},
        "transition": either("string", {"type": "string"}, {
            "type": "object", "required": ["to"], "additionalProperties": False,
            "properties": {"field": NAME, "to": {"type": "string"}}}),
        "notify": {"type": "object", "required": ["channel"], "additionalProperties": False,
                   "properties": {"channel": NAME, "template": {"type": "string", "minLength": 1},
                                  "text": {"type": "string", "minLength": 1}, "to": _PEOPLE}},
        "webhook": {"type": "object", "additionalProperties": False,
                    "properties": {"url": {"type": "string", "pattern": "^https?://"}, "url_env": ENV_NAME,
                                   "secret_env": ENV_NAME, "payload": VALUES}},
        "request_approval": either("string", NAME, {
            "type": "object", "required": ["approval"], "additionalProperties": False,
            "properties": {"approval": NAME, "reason": {"type": "string", "minLength": 1}}}),
    }}
ACTIONS: dict[str, Any] = {"type": "array", "items": ACTION}

# spellings of the SLA/cadence steps before the vocabulary was one: refused with the new word
_RENAMED = {"tag": "add_tags: [tag, …] (or {field: tags, values: [...]})",
            "create": "create_related: {entity: …, link: …, values: {…}}"}


# --------------------------------------------------------------------------- builders

def build_actions(checker: Checker, path: PathKey, raw: list[dict[str, Any]],
                  entity: EntitySpec) -> tuple[ActionSpec, ...]:
    """Every action of a rule, an SLA checkpoint or a cadence step, checked against `entity`."""
    actions: list[ActionSpec] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or len(item) != 1:
            continue  # the schema reported it
        (verb, body), = item.items()
        where = path + (index, verb)
        if verb in _RENAMED:
            checker.error(where, Msg("'{verb}' is not an action any more", verb=verb),
                          Msg("write {replacement}", replacement=_RENAMED[verb]), key=True)
            continue
        builder = _BUILDERS.get(verb)
        plugin_schema = checker.vocabulary.actions.get(verb)
        if builder is None and plugin_schema is None:
            checker.error(where, Msg("unknown action '{verb}'", verb=verb),
                          unknown_name_hint(verb, [*_BUILDERS, *checker.vocabulary.actions], Msg("actions")), key=True)
            continue
        action = builder(checker, body, where, entity) if builder is not None else \
            _plugin_action(checker, verb, plugin_schema or {}, body, where, entity)
        if action is not None:
            actions.append(action)
    return tuple(actions)


def _values(checker: Checker, path: PathKey, body: dict[str, Any], source: EntitySpec,
            target: EntitySpec, what: str) -> tuple[tuple[str, ValueSpec], ...]:
    values = []
    for field, raw in (body or {}).items():
        if field in SYSTEM_FIELDS:
            owner = field == "owner"
            checker.error(path + (field,), Msg("{what} cannot set the system field '{field}'", what=what, field=field),
                          Msg("use assign or reassign to change the owner") if owner else Msg("remove it"), key=True)
            continue
        spec = checker.field(path + (field,), target, field, Msg("field to set"))
        if spec is not None and spec.type is FieldType.COMPUTED:
            checker.error(path + (field,),
                          Msg("'{field}' is computed from its expression and cannot be set", field=field),
                          Msg("set the fields it is computed from instead"), key=True)
        values.append((field, checker.value(path + (field,), raw, source, spec)))
    return tuple(values)


def _set(checker: Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> SetAction:
    return SetAction(_values(checker, path, body, entity, entity, "set"), checker.doc.where_key(path))


def _tags(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> tuple[str, tuple[str, ...]]:
    values_path = path if isinstance(body, list) else path + ("values",)
    body = {"values": body} if isinstance(body, list) else body
    field = body.get("field") or next((f.name for f in entity.fields if f.type is FieldType.TAGS), "tags")
    spec = checker.field(path + ("field",) if "field" in body else path, entity, field, Msg("tags field"),
                         types=(FieldType.TAGS, FieldType.MULTICHOICE))
    for index, value in enumerate(body["values"]):
        checker.option(values_path + (index,), spec, value, Msg("tag"))
    return field, tuple(str(value) for value in body["values"])


def _add_tags(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> AddTagsAction:
    return AddTagsAction(*_tags(checker, body, path, entity), checker.doc.where_key(path))


def _remove_tags(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> RemoveTagsAction:
    return RemoveTagsAction(*_tags(checker, body, path, entity), checker.doc.where_key(path))


def _assign(checker: Checker, body: Any, path: PathKey, entity: EntitySpec, *, reassign: bool = False) -> AssignAction:
    body = {"policy": body} if isinstance(body, str) else dict(body or {})
    to = texts(body.get("to"))
    if body.get("backup"):  # the backup rep, else the owner's manager: the SLA steps' long-standing meaning
        to = (f"user:{body['backup']}", *to, "owner.manager")
    for index, person in enumerate(to):
        if not ASSIGNEE.match(person):
            checker.error(path + ("to", index), Msg("cannot assign to '{person}'", person=person),
                          Msg("name a user (user:wang or wang) or owner.manager"))
    if reassign and not to and "policy" not in body:
        to = ("owner.manager",)  # `reassign: {}`: the owner's manager takes it over
    policy = body.get("policy")
    policy = None if policy == "auto" else policy
    if to and policy is not None:
        checker.error(path, Msg("assign takes 'to' or 'policy', not both"),
                      Msg("route through a policy, or name the people to try in order"))
    elif not to:
        mine = [p.name for p in checker.model.routing if p.entity == entity.name]
        if policy is not None and policy not in mine:
            others = [p.entity for p in checker.model.routing if p.name == policy]
            checker.error(path, Msg("assign names unknown routing policy '{policy}'", policy=policy) if not others else
                          Msg("routing policy '{policy}' routes {other}, not {entity}", policy=policy,
                              other=others[0], entity=entity.name),
                          Msg("{suggestion} Policies are declared in a routing: document.",
                              suggestion=did_you_mean(policy, mine)))
        elif policy is None and not mine:
            checker.error(path, Msg("assign picks a routing policy for {entity}, but none is declared",
                                    entity=entity.name),
                          Msg("declare one in a routing: document (entity: {entity}), or write "
                              "to: [user:NAME, owner.manager]", entity=entity.name))
    return AssignAction(policy, tuple(to), reassign, checker.doc.where_key(path))


def _reassign(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> AssignAction:
    return _assign(checker, body, path, entity, reassign=True)


def _create_related(checker: Checker, body: dict[str, Any], path: PathKey,
                    entity: EntitySpec) -> CreateRelatedAction | None:
    target = checker.entity(path + ("entity",), body["entity"], "create_related")
    if target is None:
        return None
    link = checker.field(path + ("link",), target, body["link"], Msg("link field"), types=(FieldType.LINK,))
    if link is not None and link.link_entity != entity.name:
        checker.error(path + ("link",), Msg("{target}.{link} links to {linked}, not {entity}", target=target.name,
                                            link=link.name, linked=link.link_entity, entity=entity.name),
                      did_you_mean(entity.name, [f.name for f in target.fields if f.link_entity == entity.name]))
    values = _values(checker, path + ("values",), body.get("values") or {}, entity, target, "create_related")
    for spec in target.fields:
        if spec.is_required and spec.default is None and spec.default_expression is None \
                and spec.name not in dict(values) and spec.name != body["link"]:
            checker.error(path, Msg("{target} requires '{field}', which create_related does not give",
                                    target=target.name, field=spec.name),
                          Msg("add it under values: {{{field}: …}}", field=spec.name))
    return CreateRelatedAction(target.name, body["link"], values, checker.doc.where_key(path))


def _update_related(checker: Checker, body: dict[str, Any], path: PathKey,
                    entity: EntitySpec) -> UpdateRelatedAction | None:
    if ("link" in body) == ("entity" in body):
        checker.error(path, Msg("update_related needs either 'link' (the record this one links to) or 'entity' with "
                                "'via' (records linked to this one, or sharing its link)"),
                      Msg("e.g. {{link: lead, set: {{…}}}} or {{entity: opportunity, via: account, set: {{…}}}}"))
        return None
    if not body.get("set") and not body.get("set_if_empty"):
        checker.error(path, Msg("update_related changes nothing"),
                      Msg("add set: {{field: value}} or set_if_empty: {{…}}"))
    if "link" in body:
        link = checker.field(path + ("link",), entity, body["link"], Msg("link field"), types=(FieldType.LINK,))
        if link is None or link.link_entity is None:
            return None
        target, via, mode = checker.model.entity(link.link_entity), link.name, "parent"
    else:
        found = checker.entity(path + ("entity",), body["entity"], "update_related")
        if found is None:
            return None
        target, via = found, body.get("via") or ""
        if body.get("on"):
            if not _check_on(checker, path, entity, target, via, body["on"]):
                return None
            mode = "siblings"
        else:
            related_mode = _related_mode(checker, path, entity, target, via)
            if related_mode is None:
                return None
            mode = related_mode
    where = checker.expression(path + ("where",), body["where"], target) if body.get("where") else None
    values = _values(checker, path + ("set",), body.get("set") or {}, entity, target, "update_related")
    if_empty = _values(checker, path + ("set_if_empty",), body.get("set_if_empty") or {}, entity, target,
                       "update_related")
    unless = build_related(checker, path + ("unless",), body["unless"], entity) if body.get("unless") else None
    if body.get("on") and "link" in body:
        checker.error(path + ("on",), Msg("'on' goes with entity and via, not with link"), Msg("remove on:"),
                      key=True)
    return UpdateRelatedAction(target.name, via, mode, values, if_empty, where, checker.doc.where_key(path),
                               body.get("on"), unless)


def _check_on(checker: Checker, path: PathKey, entity: EntitySpec, target: EntitySpec, via: str, on: str) -> bool:
    """`on`: this record's link whose value the related records' `via` must equal — both to one entity."""
    own = checker.field(path + ("on",), entity, on, Msg("on link"), types=(FieldType.LINK,))
    theirs = checker.field(path + ("via",), target, via, Msg("via link"), types=(FieldType.LINK,))
    if own is None or theirs is None:
        return False
    if own.link_entity != theirs.link_entity:
        checker.error(path + ("on",), Msg("{entity}.{on} links to {own} but {target}.{via} links to {theirs}",
                                          entity=entity.name, on=on, own=own.link_entity, target=target.name,
                                          via=via, theirs=theirs.link_entity),
                      Msg("on and via must both link to the same entity"))
        return False
    return True


def _related_mode(checker: Checker, path: PathKey, entity: EntitySpec, target: EntitySpec, via: str) -> str | None:
    """children: target.via links here; siblings: both link through `via` to the same entity."""
    mode = related_mode(checker, path + ("via",), entity, target, via)
    return None if mode is None else mode.value


def _transition(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> TransitionAction | None:
    to_path = path if isinstance(body, str) else path + ("to",)
    body = {"to": body} if isinstance(body, str) else body
    field = body.get("field") or entity.stage_field
    if field is None:
        checker.error(path, Msg("{entity} has no stage or status field to transition", entity=entity.name),
                      Msg("name the choice field: transition: {{field: <field>, to: <option>}}"))
        return None
    spec = checker.field(path + ("field",) if "field" in body else path, entity, field, Msg("stage field"),
                         types=(FieldType.CHOICE,))
    checker.option(to_path, spec, body["to"], Msg("target stage"))
    return TransitionAction(field, str(body["to"]), checker.doc.where_key(path))


def _notify(checker: Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> NotifyAction:
    channels = [spec.name for spec in checker.model.channels]
    if body["channel"] not in channels:
        checker.error(path + ("channel",), Msg("unknown channel '{name}'", name=body["channel"]),
                      Msg("{suggestion}; channels are declared in a channels: document",
                          suggestion=did_you_mean(body["channel"], channels)))
    text, template = body.get("text"), body.get("template")
    if (text is None) == (template is None):
        checker.error(path, Msg("notify needs exactly one of 'text' (inline) and 'template' (a declared one)"),
                      Msg("e.g. text: '新线索 {{{{ record.name }}}}' or template: lead_sla_breach"))
    if template is not None:
        known = [spec.name for spec in checker.model.templates]
        if template not in known:
            looks_inline = any(mark in template for mark in (" ", "{", "}")) or not re.match(r"^[a-z][a-z0-9_]*$",
                                                                                             template)
            checker.error(path + ("template",), Msg("unknown message template '{name}'", name=template),
                          Msg("inline text goes under text:, with Jinja2 placeholders such as {{{{ record.name }}}}")
                          if looks_inline else Msg("{suggestion} Declare it under templates: in a channels document.",
                                                   suggestion=did_you_mean(template, known)))
        else:
            found = checker.model.template(template)
            for _, part in (*found.text, *found.title):
                checker.jinja(path + ("template",), part, Msg("template '{name}'", name=template), entity)
    if text is not None:
        checker.jinja(path + ("text",), text, Msg("notify text"), entity)
    to = texts(body.get("to", "owner"))
    for position, person in enumerate(to):
        if not RECIPIENT.match(person):
            checker.error(path + ("to", position), Msg("unknown recipient '{person}'", person=person),
                          Msg("write owner, owner.manager, backup, all, role:NAME, team:NAME or user:NAME"))
    return NotifyAction(body["channel"], to, text, template, checker.doc.where_key(path))


def _request_approval(checker: Checker, body: Any, path: PathKey, entity: EntitySpec) -> RequestApprovalAction | None:
    body = {"approval": body} if isinstance(body, str) else body
    name = body["approval"]
    mine = [spec.name for spec in checker.model.approvals if spec.entity == entity.name]
    if name not in mine:
        others = [spec.entity for spec in checker.model.approvals if spec.name == name]
        checker.error(path, Msg("unknown approval '{name}'", name=name) if not others else
                      Msg("approval '{name}' approves {other} records, not {entity}", name=name, other=others[0],
                          entity=entity.name),
                      Msg("{suggestion} Approvals are declared in approval: documents.",
                          suggestion=did_you_mean(name, mine)))
        return None
    reason = checker.value(path + ("reason",), body["reason"], entity, None) if body.get("reason") else None
    return RequestApprovalAction(name, reason, checker.doc.where_key(path))


def _webhook(checker: Checker, body: dict[str, Any], path: PathKey, entity: EntitySpec) -> WebhookAction:
    if ("url" in body) == ("url_env" in body):
        checker.error(path, Msg("a webhook action needs exactly one of 'url' and 'url_env'"),
                      Msg("prefer url_env: the environment variable holding the address"))
    payload = tuple((key, checker.value(path + ("payload", key), raw, entity, None))
                    for key, raw in (body.get("payload") or {}).items())
    return WebhookAction(body.get("url"), body.get("url_env"), body.get("secret_env"), payload,
                         checker.doc.where_key(path))


def _plugin_action(checker: Checker, verb: str, schema: Mapping[str, Any], body: Any, path: PathKey,
                   entity: EntitySpec) -> PluginAction | None:
    """A plugin's verb: the body must satisfy the plugin's schema, and be a block of options
    whose values are literals or '=expressions' over `entity` (`verb:` alone gives none)."""
    body = {} if body is None else body
    import jsonschema  # (only a blueprint using a plugin's verb gets here: see loader._validators)
    problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.absolute_path))
    for problem in problems:
        checker.error(path + tuple(problem.absolute_path), Msg("{verb}: {problem}", verb=verb, problem=problem.message),
                      Msg("see the documentation of the plugin providing '{verb}'", verb=verb))
    if problems:
        return None
    if not isinstance(body, dict):
        checker.error(path, Msg("{verb} takes a block of options", verb=verb),
                      Msg("write {verb}: {{option: value, …}}", verb=verb))
        return None
    values = tuple((str(key), checker.value(path + (key,), raw, entity, None)) for key, raw in body.items())
    return PluginAction(verb, entity.name, values, checker.doc.where_key(path))


_BUILDERS: dict[str, Any] = {
    "set": _set, "add_tags": _add_tags, "remove_tags": _remove_tags, "assign": _assign, "reassign": _reassign,
    "create_related": _create_related, "update_related": _update_related, "transition": _transition,
    "notify": _notify, "webhook": _webhook, "request_approval": _request_approval,
}
BUILTIN_VERBS = frozenset(_BUILDERS) | frozenset(_RENAMED)  # a plugin verb may not take one of these names

"""Builders of the automation documents (rules, routing, sources): every check with its file:line.

The specs they build, the JSON Schemas and the look-ups are in automation.py; see docs/automation.md."""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from typing import Any

from engine.metamodel.automation import (ANY_VALUE, CLOSED_LIKE, DEFAULT_PRIORITY, AddTagsAction, AssignAction,
                                         AuthKind, AuthSpec, CreateRelatedAction, FieldMapping, NotifyAction,
                                         PayloadPath, PoolSpec, RemoveTagsAction, RoutingPolicySpec, RuleSpec,
                                         SetAction, SourceSpec, Strategy, TransitionAction, TriggerKind, TriggerSpec,
                                         WebhookAction)
from engine.metamodel.checks import Checker, build_items, texts
from engine.metamodel.crossrefs import SYSTEM_FIELDS
from engine.metamodel.errors import BlueprintError, did_you_mean
from engine.metamodel.model import EntitySpec, Expression, FieldType, Label, Metamodel
from engine.metamodel.source import PathKey, SourceDocument


# --------------------------------------------------------------------------- routing builder

def build_routing(documents: list[SourceDocument], model: Metamodel,
                  functions: Collection[str]) -> tuple[dict[str, Any], list[BlueprintError]]:
    """RoutingPolicySpecs from every `routing:` document, then checks across policies."""
    policies, errors = build_items("routing", "routing policy", documents, model, functions, _build_policy)
    errors.extend(_check_policy_overlaps(policies))
    return {"routing": tuple(policies)}, errors


def _build_policy(checker: Checker, name: str, data: dict[str, Any], path: PathKey,
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


def _build_pools(checker: Checker, name: str, data: dict[str, Any], path: PathKey, entity: EntitySpec,
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


def _pool(checker: Checker, policy: str, key: str, raw: Any, path: PathKey, data: dict[str, Any]) -> PoolSpec:
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


def _open_when(checker: Checker, data: dict[str, Any], path: PathKey, entity: EntitySpec,
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
    sources, errors = build_items("sources", "source", documents, model, functions,
                                   lambda checker, name, data, path, _: _build_source(checker, name, data, path))
    return {"sources": tuple(sources)}, errors


def _path(checker: Checker, path: PathKey, text: str) -> PayloadPath | None:
    try:
        return parse_payload_path(text)
    except ValueError as exc:
        checker.error(path, str(exc), "write a path like $.event.id, contact.mobile or items[0].value")
        return None


def _build_source(checker: Checker, name: str, data: dict[str, Any], path: PathKey) -> SourceSpec | None:
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


def _build_auth(checker: Checker, name: str, data: dict[str, Any], path: PathKey) -> AuthSpec:
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
    rules, errors = build_items("rules", "rule", documents, model, functions, _build_rule)
    return {"rules": tuple(sorted(rules, key=lambda rule: (rule.priority, rule.position)))}, errors


def _build_rule(checker: Checker, name: str, data: dict[str, Any], path: PathKey,
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


def _build_trigger(checker: Checker, raw: Any, path: PathKey, entity: EntitySpec) -> TriggerSpec:
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
            for value in texts(data.get(option)):
                checker.option(path + (option,), spec, value, f"'{option}' value")
        return TriggerSpec(kind, field=field, from_values=texts(data.get("from")), to_values=texts(data.get("to")))
    if kind is TriggerKind.WEBHOOK_RECEIVED and "source" in data:
        known = [source.name for source in checker.model.sources]
        if data["source"] not in known:
            checker.error(path + ("source",), f"trigger names unknown source '{data['source']}'",
                          did_you_mean(data["source"], known) + " Sources are declared in a sources: document.")
        return TriggerSpec(kind, source=data["source"])
    return TriggerSpec(kind)


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


_ACTION_BUILDERS: dict[str, Any] = {
    "set": _set, "add_tags": _add_tags, "remove_tags": _remove_tags, "assign": _assign,
    "create_related": _create_related, "transition": _transition, "notify": _notify, "webhook": _webhook,
}

"""`routing:` documents: who gets a record — policies with a strategy (territory, industry pool,
round robin, least loaded, weighted), pools of reps, caps (open records, assignments per day or
week), a backup (a rep, `owner.manager`, or a role of a team; per pool if need be) and a
fallback queue. Territory pools may be keyed by a link's readable key (a region's name).
Overlapping policies and empty pools are reported at load.
"""

from __future__ import annotations

import ast
import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, build_items
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.rules import DEFAULT_PRIORITY
from engine.metamodel.schema import COMMON, EXPRESSION, NAME, USERNAME, either, named_schema
from engine.metamodel.source import PathKey, SourceDocument
from engine.metamodel.sources import ANY_VALUE


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


# Choice values that mean "this record is finished" when a policy does not say `open_when`.
CLOSED_LIKE = ("converted", "disqualified", "closed", "won", "lost", "closed_won", "closed_lost",
               "resolved", "cancelled", "canceled", "done", "archived", "rejected", "invalid")


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
class BackupSpec:
    """Who takes a record nobody in the pool can: a named rep (`username`), the manager of the
    user in a user field (`relation`: "owner" for `owner.manager`), or the first active member,
    by username, of a team with a role (`team`, `role`)."""

    username: str | None = None
    relation: str | None = None
    team: str | None = None
    role: str | None = None

    def describe(self) -> str:
        if self.relation is not None:
            return f"{self.relation}.manager"
        if self.team is not None:
            return f"team {self.team}" + (f" ({self.role})" if self.role else "")
        return self.username or "nobody"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """Who may receive records: listed usernames and/or everyone of a team (optionally one role),
    and, when it differs from the policy's, this pool's own backup."""

    key: str
    members: tuple[str, ...] = ()
    weights: tuple[tuple[str, int], ...] = ()
    team: str | None = None
    role: str | None = None
    location: Location = NOWHERE
    backup: BackupSpec | None = None

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
    cap_per_day: int | None = None   # assignments by this policy per rep per business-timezone day
    cap_per_week: int | None = None  # … per week (Monday to Sunday)
    skip_on_leave: bool = True
    backup: BackupSpec | None = None
    link_entity: str | None = None  # territory keyed by a link: pools are keyed by the linked record's title
    fallback_queue: str | None = None
    alert: str | None = None
    reroute_on: tuple[str, ...] = ()  # "updated": a record still unassigned is routed again by any later change
    label: Label = Label(())
    description: str = ""
    location: Location = NOWHERE

    def pool(self, key: str) -> PoolSpec | None:
        return next((pool for pool in self.pools if pool.key == key), None)

    def cap_for(self, username: str) -> int | None:
        return dict(self.caps).get(username, self.cap)

    def backup_for(self, pool: str | None) -> BackupSpec | None:
        """The pool's own backup, else the policy's."""
        spec = self.pool(pool) if pool is not None else None
        return spec.backup if spec is not None and spec.backup is not None else self.backup

    @property
    def counts_assignments(self) -> bool:
        return self.cap_per_day is not None or self.cap_per_week is not None


_MEMBER_LIST = {"type": "array", "items": USERNAME, "uniqueItems": True}

# a username, `FIELD.manager` (the manager of the user in that field), or {team: T, role: R}
_BACKUP = either("string", USERNAME, {"type": "object", "required": ["team"], "additionalProperties": False,
                                      "properties": {"team": {"type": "string", "minLength": 1}, "role": NAME}})

_POOL = either("array", _MEMBER_LIST, {
    "type": "object", "additionalProperties": False, "properties": {
        "members": either("array", _MEMBER_LIST, {
            "type": "object", "propertyNames": USERNAME, "additionalProperties": {"type": "integer", "minimum": 1}}),
        "team": {"type": "string", "minLength": 1}, "role": NAME, "backup": _BACKUP}})


_POLICY = {"type": "object", "required": ["entity", "strategy"], "additionalProperties": False,
           "properties": {
               **COMMON, "strategy": {"enum": [strategy.value for strategy in Strategy]}, "match": EXPRESSION,
               "priority": {"type": "integer"}, "field": NAME, "pool": _POOL,
               "pools": {"type": "object", "minProperties": 1, "additionalProperties": _POOL},
               "within": {"enum": ["round_robin", "least_loaded", "weighted"]},
               "cap": {"type": "integer", "minimum": 1},
               "cap_per_day": {"type": "integer", "minimum": 1}, "cap_per_week": {"type": "integer", "minimum": 1},
               "caps": {"type": "object", "propertyNames": USERNAME,
                        "additionalProperties": {"type": "integer", "minimum": 0}},
               "open_when": EXPRESSION, "skip_on_leave": {"type": "boolean"}, "backup": _BACKUP,
               "fallback_queue": NAME, "alert": NAME,
               "reroute_on": {"type": "array", "items": {"enum": ["updated"]}, "uniqueItems": True}}}


ROUTING_SCHEMA: dict[str, Any] = {"type": "object", "required": ["routing"], "additionalProperties": False,
                                  "properties": {"routing": named_schema(_POLICY)}}


def build_routing(documents: list[SourceDocument], model: Metamodel,
                  vocabulary: Vocabulary) -> Built:
    """RoutingPolicySpecs from every `routing:` document, then checks across policies."""
    policies, errors = build_items("routing", Msg("routing policy"), documents, model, vocabulary, _build_policy)
    errors.extend(_check_policy_overlaps(policies))
    return replace(model, routing=tuple(policies)), errors


def _build_policy(checker: Checker, name: str, data: dict[str, Any], path: PathKey,
                  position: int) -> RoutingPolicySpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("routing policy '{name}'", name=name))
    if entity is None:
        return None
    strategy = Strategy(data["strategy"])
    within = Strategy(data.get("within", "round_robin")) if strategy.is_by_field else strategy
    if "within" in data and not strategy.is_by_field:
        checker.error(path + ("within",), Msg("'within' does not apply to a {strategy} policy", strategy=strategy.value),
                      Msg("it says how to choose inside the pool of a territory or industry_pool policy"), key=True)
    pools = _build_pools(checker, name, data, path, entity, strategy)
    backup = _backup(checker, path + ("backup",), data["backup"], entity) if "backup" in data else None
    link = entity.field(data["field"]) if strategy.is_by_field and data.get("field") in entity.field_names() else None
    if within is Strategy.WEIGHTED:
        for pool in pools:
            if pool.members and not pool.weights:
                checker.error(path, Msg("policy '{name}' is weighted but pool '{pool}' gives no weights",
                                        name=name, pool=pool.key),
                              Msg("write members as a mapping username → weight, e.g. members: {{wang: 3, li: 1}}"))
    match = checker.expression(path + ("match",), data["match"], entity) if "match" in data else None
    open_when = _open_when(checker, data, path, entity, strategy, name)
    if "cap_per_week" in data and "cap_per_day" in data and data["cap_per_week"] < data["cap_per_day"]:
        checker.error(path + ("cap_per_week",), Msg("policy '{name}' allows fewer assignments per week "
                                                    "({week}) than per day ({day})", name=name,
                                                    week=data["cap_per_week"], day=data["cap_per_day"]),
                      Msg("raise cap_per_week or drop it"), severity="warning")
    if "backup" not in data and "fallback_queue" not in data:
        checker.error(path, Msg("policy '{name}' has neither a backup rep nor a fallback queue", name=name),
                      Msg("when nobody in the pool can take a record it would stay unassigned; add "
                          "'fallback_queue: <name>' and 'alert: <channel>'"), key=True, severity="warning")
    return RoutingPolicySpec(
        name=name, entity=entity.name, strategy=strategy, pools=pools, within=within, open_when=open_when,
        match=match, field=data.get("field"), priority=int(data.get("priority", DEFAULT_PRIORITY)),
        position=position, cap=data.get("cap"), caps=tuple((data.get("caps") or {}).items()),
        cap_per_day=data.get("cap_per_day"), cap_per_week=data.get("cap_per_week"),
        skip_on_leave=bool(data.get("skip_on_leave", True)), backup=backup,
        link_entity=link.link_entity if link is not None and link.type is FieldType.LINK else None,
        fallback_queue=data.get("fallback_queue"), alert=data.get("alert"),
        reroute_on=tuple(data.get("reroute_on") or ()),
        label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
        description=str(data.get("description", "")), location=checker.doc.where_key(path))


def _build_pools(checker: Checker, name: str, data: dict[str, Any], path: PathKey, entity: EntitySpec,
                 strategy: Strategy) -> tuple[PoolSpec, ...]:
    if strategy.is_by_field:
        for option in ("field", "pools"):
            if option not in data:
                checker.error(path, Msg("a {strategy} policy needs '{option}'", strategy=strategy.value, option=option),
                              Msg("e.g. field: region and pools: {{east: {{team: east}}, '*': [wang]}}"), key=True)
        if "pool" in data:
            checker.error(path + ("pool",), Msg("a {strategy} policy has 'pools' (one per value), not 'pool'",
                                                strategy=strategy.value),
                          Msg("move the members under pools: {{<value>: ..., '*': ...}}"), key=True)
        spec = checker.field(path + ("field",), entity, data["field"], Msg("routing field")) if "field" in data else None
        pools = []
        for key, raw in (data.get("pools") or {}).items():
            if key != ANY_VALUE:
                checker.option(path + ("pools", key), spec, key, Msg("pool for value"))
            pools.append(_pool(checker, name, str(key), raw, path + ("pools", key), data, entity))
        return tuple(pools)
    if "pools" in data or "field" in data:
        option = "pools" if "pools" in data else "field"
        checker.error(path + (option,), Msg("'{option}' applies to territory and industry_pool policies", option=option),
                      Msg("a round_robin, least_loaded or weighted policy has one 'pool'"), key=True)
    if "pool" not in data:
        checker.error(path, Msg("policy '{name}' needs a 'pool'", name=name),
                      Msg("e.g. pool: {{team: east}} or pool: [wang, li]"), key=True)
        return ()
    return (_pool(checker, name, ANY_VALUE, data["pool"], path + ("pool",), data, entity),)


def _pool(checker: Checker, policy: str, key: str, raw: Any, path: PathKey, data: dict[str, Any],
          entity: EntitySpec) -> PoolSpec:
    raw = {"members": raw} if isinstance(raw, list) else raw
    members = raw.get("members") or []
    weights = tuple(members.items()) if isinstance(members, dict) else ()
    backup = _backup(checker, path + ("backup",), raw["backup"], entity) if "backup" in raw else None
    pool = PoolSpec(key, tuple(members), weights, raw.get("team"), raw.get("role"), checker.doc.where(path), backup)
    roles = [role.name for role in checker.model.roles]
    if pool.role is not None and len(roles) > 1 and pool.role not in roles:
        checker.error(path + ("role",), Msg("pool '{pool}' of policy '{policy}' names unknown role '{role}'",
                                            pool=key, policy=policy, role=pool.role),
                      did_you_mean(pool.role, roles))
    if pool.is_empty:
        label = Msg("pool '{pool}' of policy '{policy}'", pool=key, policy=policy) if key != ANY_VALUE else \
            Msg("the pool of policy '{policy}'", policy=policy)
        has_fallback = "backup" in data or "fallback_queue" in data or backup is not None
        checker.error(path, Msg("{pool} has no members", pool=label),
                      Msg("records routed here go to the backup rep or the fallback queue") if has_fallback else
                      Msg("records routed here would stay unassigned: add members, a team, or a fallback_queue"),
                      severity="warning" if has_fallback else "error")
    return pool


def _backup(checker: Checker, path: PathKey, raw: Any, entity: EntitySpec) -> BackupSpec:
    """A named rep, `FIELD.manager` for a user field of the entity (owner included), or a role of a team."""
    if isinstance(raw, dict):
        roles = [role.name for role in checker.model.roles]
        role = raw.get("role")
        if role is not None and len(roles) > 1 and role not in roles:
            checker.error(path + ("role",), Msg("backup names unknown role '{role}'", role=role),
                          did_you_mean(role, roles))
        return BackupSpec(team=str(raw["team"]), role=role)
    text = str(raw)
    field, _, relation = text.partition(".")
    users = ["owner", *(f.name for f in entity.fields if f.type is FieldType.USER)]
    if not relation or (field not in users and relation != "manager"):
        return BackupSpec(username=text)  # usernames may contain dots (li.na)
    if field not in users:
        checker.error(path, Msg("backup '{backup}' names '{field}', which is not a user field of {entity}",
                                backup=text, field=field, entity=entity.name),
                      Msg("{suggestion} Write FIELD.manager with a user field, e.g. owner.manager.",
                          suggestion=did_you_mean(field, users)))
    if relation != "manager":
        checker.error(path, Msg("backup '{backup}' follows '{relation}', but only 'manager' leads from a user to "
                                "another", backup=text, relation=relation),
                      Msg("{suggestion} Write {field}.manager.", suggestion=did_you_mean(relation, ["manager"]),
                          field=field))
    return BackupSpec(relation=field)


def _open_when(checker: Checker, data: dict[str, Any], path: PathKey, entity: EntitySpec,
               strategy: Strategy, name: str) -> Expression:
    """The declared `open_when`, or an explicit default built from the status/stage options."""
    if "open_when" in data:
        expression = checker.expression(path + ("open_when",), data["open_when"], entity)
        if expression is not None:
            return expression
    status = entity.field(entity.stage_field) if entity.stage_field else None
    closed = [value for value in (status.choice_values() if status else ()) if value in CLOSED_LIKE]
    source = f"{status.name} not in {closed!r}" if status is not None and closed else "True"
    uses_load = strategy is Strategy.LEAST_LOADED or data.get("within") == "least_loaded" or "cap" in data
    if source == "True" and uses_load and "open_when" not in data:
        checker.error(path, Msg("policy '{name}' counts open records but cannot tell which records are open",
                                name=name),
                      Msg("add open_when: \"<expression>\", e.g. open_when: \"status in ['new', 'contacted']\""),
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
                    Msg("routing policies '{first}' and '{second}' for {entity} have the same "
                        "priority {priority} and both can match the same record", first=first.name,
                        second=second.name, entity=first.entity, priority=first.priority),
                    Msg("give one a smaller priority (it is tried first) or make their match conditions exclusive, "
                        "e.g. source == 'douyin' vs source != 'douyin' (the other is at {place})",
                        place=str(first.location))))
            for earlier, later in ((first, second), (second, first)):
                if earlier.match is None and earlier.priority < later.priority:
                    errors.append(BlueprintError(
                        later.location, ("routing", later.name),
                        Msg("routing policy '{name}' is never used: '{earlier}' (priority "
                            "{priority}) has no match condition and takes every {entity} first", name=later.name,
                            earlier=earlier.name, priority=earlier.priority, entity=earlier.entity),
                        Msg("give '{name}' a smaller priority than {priority}", name=later.name,
                            priority=earlier.priority), severity="warning"))
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

"""Roles and permissions in the blueprint (`roles:` documents).

```yaml
roles:
  admin: {label: {zh: 管理员, en: Administrator}, admin: true}
  sales_rep:
    label: {zh: 销售, en: Sales rep}
    entities:
      "*":  {read: own, create: all, update: own}          # every entity not listed below
      lead: {read: own, create: all, update: own, assign: none, export: none,
             hidden: [raw_payload], readonly: [score]}
```

Each action (read, create, update, delete, assign, export) has a scope: none, own (records
the user owns), team (records owned by anyone in the user's team) or all. An action not
given for an entity falls back to the `"*"` block, then to none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built
from engine.metamodel.conditions import RowConditionError, check_row_condition
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.expressions import Expression, ExpressionSyntaxError, parse_expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.source import SourceDocument

if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary

ACTIONS = ("read", "create", "update", "delete", "assign", "export")


class Scope(enum.Enum):
    NONE = "none"
    OWN = "own"
    TEAM = "team"
    ALL = "all"

    def covers(self, other: Scope) -> bool:
        order = [Scope.NONE, Scope.OWN, Scope.TEAM, Scope.ALL]
        return order.index(self) >= order.index(other)


@dataclass(frozen=True, slots=True)
class EntityPermissions:
    scopes: tuple[tuple[str, Scope], ...]
    hidden: frozenset[str] = frozenset()
    readonly: frozenset[str] = frozenset()
    via: tuple[str, ...] = ()  # user fields: a record naming the user in one of them is within every scope but none

    def scope(self, action: str) -> Scope:
        return dict(self.scopes).get(action, Scope.NONE)


FULL = EntityPermissions(tuple((action, Scope.ALL) for action in ACTIONS))


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    label: Label
    is_admin: bool = False
    entities: tuple[tuple[str, EntityPermissions], ...] = ()
    location: Location = NOWHERE

    def permissions(self, entity: str) -> EntityPermissions:
        if self.is_admin:
            return FULL
        return dict(self.entities).get(entity) or dict(self.entities).get("*") or EntityPermissions(())


@dataclass(frozen=True, slots=True)
class TeamSpec:
    """A team (the users' `team`) and the records without an owner its `team` scope also covers:
    entity → row condition (engine/metamodel/conditions.py), e.g. the unassigned leads of its regions."""

    name: str
    label: Label
    covers: tuple[tuple[str, Expression], ...] = ()
    location: Location = NOWHERE

    def unowned(self, entity: str) -> Expression | None:
        return dict(self.covers).get(entity)


# The role every installation has, even when the blueprint declares none.
ADMIN_ROLE = RoleSpec("admin", Label.of({"zh": "管理员", "en": "Administrator"}), is_admin=True)

_PERMISSION_BLOCK: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        **{action: {"enum": [scope.value for scope in Scope]} for action in ACTIONS},
        "hidden": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "readonly": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "via": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}
ROLES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["roles"], "additionalProperties": False,
    "properties": {
        "teams": {"type": "object", "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"}, "additionalProperties": {
            "type": "object", "additionalProperties": False, "properties": {
                "label": {"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}]},
                "description": {},
                "covers": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}}}},
        "roles": {
        "type": "object", "minProperties": 1,
        "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
        "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "label": {"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}]},
                "description": {},
                "admin": {"type": "boolean"},
                "entities": {"type": "object", "additionalProperties": _PERMISSION_BLOCK},
            }}}},
}


def build_roles(documents: list[SourceDocument], model: Metamodel,
                vocabulary: Vocabulary) -> Built:
    """RoleSpecs from every `roles:` document, with checks that entities and fields exist."""
    errors: list[BlueprintError] = []
    roles: dict[str, RoleSpec] = {}
    teams: dict[str, TeamSpec] = {}
    for doc in documents:
        for team_name, team in (doc.data.get("teams") or {}).items():
            teams[team_name] = _build_team(doc, team_name, team, model, errors)
        for name, data in doc.data["roles"].items():
            path = ("roles", name)
            if name in roles:
                errors.append(BlueprintError(doc.where_key(path), path, Msg("role '{name}' is declared twice", name=name),
                                             Msg("the first is at {place}", place=roles[name].location)))
                continue
            entities = []
            for entity_name, block in (data.get("entities") or {}).items():
                entity_path = path + ("entities", entity_name)
                if entity_name != "*" and not model.has_entity(entity_name):
                    errors.append(BlueprintError(doc.where_key(entity_path), entity_path,
                                                 Msg("role '{name}' names unknown entity '{entity}'", name=name,
                                                     entity=entity_name),
                                                 did_you_mean(entity_name, [*model.entity_names(), "*"])))
                    continue
                for option in ("hidden", "readonly"):
                    for position, field in enumerate(block.get(option) or []):
                        every = entity_name == "*"
                        known = model.entity(entity_name).field_names() if not every else ()
                        if every or field not in known:
                            errors.append(BlueprintError(
                                doc.where(entity_path + (option, position)), entity_path + (option, position),
                                Msg("{option} field '{field}' is not a field of '{entity}'", option=option,
                                    field=field, entity=entity_name),
                                Msg("hidden/readonly fields are listed per entity, not under \"*\"")
                                if every else did_you_mean(field, known)))
                for position, field in enumerate(block.get("via") or []):
                    known_users = [spec.name for spec in model.entity(entity_name).fields
                                   if spec.type.value == "user"] if entity_name != "*" else []
                    if field not in known_users:
                        errors.append(BlueprintError(
                            doc.where(entity_path + ("via", position)), entity_path + ("via", position),
                            Msg("via field '{field}' is not a user field of '{entity}'", field=field, entity=entity_name),
                            did_you_mean(field, known_users) if known_users else
                            Msg("via names user fields of one entity (e.g. via: [service_engineer])")))
                scopes = tuple((action, Scope(block[action])) for action in ACTIONS if action in block)
                entities.append((entity_name, EntityPermissions(
                    scopes, frozenset(block.get("hidden") or ()), frozenset(block.get("readonly") or ()),
                    tuple(block.get("via") or ()))))
            roles[name] = RoleSpec(name, Label.of(data.get("label"), name.replace("_", " ").capitalize()),
                                   bool(data.get("admin", False)), _with_fallback(entities), doc.where_key(path))
    if "admin" not in roles:
        roles["admin"] = ADMIN_ROLE
    return replace(model, roles=tuple(roles.values()), teams=tuple(teams.values())), errors


def _build_team(doc: SourceDocument, name: str, data: dict[str, Any], model: Metamodel,
                errors: list[BlueprintError]) -> TeamSpec:
    covers = []
    for entity_name, source in (data.get("covers") or {}).items():
        path = ("teams", name, "covers", entity_name)
        if not model.has_entity(entity_name):
            errors.append(BlueprintError(doc.where_key(path), path,
                                         Msg("team '{name}' covers unknown entity '{entity}'", name=name,
                                             entity=entity_name),
                                         did_you_mean(entity_name, model.entity_names())))
            continue
        try:
            expression = parse_expression(source, doc.where(path))
            check_row_condition(expression, model.entity(entity_name), allow_me=False)
        except (ExpressionSyntaxError, RowConditionError) as problem:
            errors.append(BlueprintError(doc.where(path), path,
                                         Msg("team '{name}' covers {entity}: {problem}", name=name, entity=entity_name,
                                             problem=problem),
                                         Msg("a condition on the unowned records, e.g. \"region in ['east', 'north']\"")))
            continue
        covers.append((entity_name, expression))
    return TeamSpec(name, Label.of(data.get("label"), name), tuple(covers), doc.where_key(("teams", name)))


def _with_fallback(entities: list[tuple[str, EntityPermissions]]) -> tuple[tuple[str, EntityPermissions], ...]:
    """Fill actions an entity block leaves out from the role's "*" block."""
    fallback = dict(entities).get("*")
    if fallback is None:
        return tuple(entities)
    merged = []
    for name, permissions in entities:
        scopes = dict(fallback.scopes) | dict(permissions.scopes)
        merged.append((name, EntityPermissions(tuple(scopes.items()), permissions.hidden, permissions.readonly,
                                               permissions.via)))
    return tuple(merged)

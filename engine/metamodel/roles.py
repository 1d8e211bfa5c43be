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
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.labels import Label
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


# The role every installation has, even when the blueprint declares none.
ADMIN_ROLE = RoleSpec("admin", Label.of({"zh": "管理员", "en": "Administrator"}), is_admin=True)

_PERMISSION_BLOCK: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        **{action: {"enum": [scope.value for scope in Scope]} for action in ACTIONS},
        "hidden": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "readonly": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}
ROLES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["roles"], "additionalProperties": False,
    "properties": {"roles": {
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
    for doc in documents:
        for name, data in doc.data["roles"].items():
            path = ("roles", name)
            if name in roles:
                errors.append(BlueprintError(doc.where_key(path), path, f"role '{name}' is declared twice",
                                             f"the first is at {roles[name].location}"))
                continue
            entities = []
            for entity_name, block in (data.get("entities") or {}).items():
                entity_path = path + ("entities", entity_name)
                if entity_name != "*" and not model.has_entity(entity_name):
                    errors.append(BlueprintError(doc.where_key(entity_path), entity_path,
                                                 f"role '{name}' names unknown entity '{entity_name}'",
                                                 did_you_mean(entity_name, [*model.entity_names(), "*"])))
                    continue
                for option in ("hidden", "readonly"):
                    for position, field in enumerate(block.get(option) or []):
                        known = model.entity(entity_name).field_names() if entity_name != "*" else ()
                        if entity_name == "*" or field not in known:
                            errors.append(BlueprintError(
                                doc.where(entity_path + (option, position)), entity_path + (option, position),
                                f"{option} field '{field}' is not a field of '{entity_name}'",
                                "hidden/readonly fields are listed per entity, not under \"*\""
                                if entity_name == "*" else did_you_mean(field, known)))
                scopes = tuple((action, Scope(block[action])) for action in ACTIONS if action in block)
                entities.append((entity_name, EntityPermissions(
                    scopes, frozenset(block.get("hidden") or ()), frozenset(block.get("readonly") or ()))))
            roles[name] = RoleSpec(name, Label.of(data.get("label"), name.replace("_", " ").capitalize()),
                                   bool(data.get("admin", False)), _with_fallback(entities), doc.where_key(path))
    if "admin" not in roles:
        roles["admin"] = ADMIN_ROLE
    return replace(model, roles=tuple(roles.values())), errors


def _with_fallback(entities: list[tuple[str, EntityPermissions]]) -> tuple[tuple[str, EntityPermissions], ...]:
    """Fill actions an entity block leaves out from the role's "*" block."""
    fallback = dict(entities).get("*")
    if fallback is None:
        return tuple(entities)
    merged = []
    for name, permissions in entities:
        scopes = dict(fallback.scopes) | dict(permissions.scopes)
        merged.append((name, EntityPermissions(tuple(scopes.items()), permissions.hidden, permissions.readonly)))
    return tuple(merged)

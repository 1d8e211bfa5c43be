"""Who may do what to which records, from the blueprint's roles — enforced inside RecordService.

Scopes: `own` means records the actor owns, `team` records owned by anyone in the actor's
team (including the actor), `all` every record, `none` nothing. A refusal is a 403 that
names the permission and the entity, never an empty list that looks like lost data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import FieldType, Metamodel
from engine.metamodel.roles import ADMIN_ROLE, FULL, EntityPermissions, Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.storage.tables import Schema


class Forbidden(RecordError):
    status = 403
    code = "forbidden"


class Access:
    """Permission answers for one metamodel; no state besides the model and the tables."""

    def __init__(self, model: Metamodel, schema: Schema) -> None:
        self.model = model
        self.schema = schema

    def permissions(self, actor: Actor, entity: str) -> EntityPermissions:
        if actor.is_system:
            return FULL
        if actor.role is None or not self.model.has_role(actor.role):
            return ADMIN_ROLE.permissions(entity) if actor.role == "admin" else EntityPermissions(())
        return self.model.role(actor.role).permissions(entity)

    def scope(self, actor: Actor, entity: str, action: str) -> Scope:
        return self.permissions(actor, entity).scope(action)

    def require(self, actor: Actor, entity: str, action: str) -> Scope:
        """The actor's scope for `action`, or Forbidden when it is none."""
        scope = self.scope(actor, entity, action)
        if scope is Scope.NONE:
            raise Forbidden(f"you lack permission '{action}' on {entity} (role {actor.role or 'none'}); "
                            "ask an administrator for it", field=None, permission=action, entity=entity)
        return scope

    def row_condition(self, actor: Actor, entity: str, action: str, table: sa.Table) -> Any:
        """A WHERE condition limiting rows to the actor's scope (None: no limit)."""
        scope = self.require(actor, entity, action)
        if scope is Scope.ALL:
            return None
        if scope is Scope.OWN or not actor.team:
            return table.c.owner == actor.id
        users = self.schema.users
        return sa.or_(table.c.owner == actor.id,
                      table.c.owner.in_(sa.select(users.c.id).where(users.c.team == actor.team)))

    def check_record(self, connection: sa.Connection, actor: Actor, entity: str, action: str,
                     record: Mapping[str, Any]) -> None:
        """Forbidden unless `record` lies within the actor's scope for `action`."""
        scope = self.require(actor, entity, action)
        if scope is Scope.ALL or record.get("owner") == actor.id:
            return
        if scope is Scope.TEAM and actor.team and record.get("owner") is not None:
            users = self.schema.users
            team = connection.execute(sa.select(users.c.team).where(users.c.id == record["owner"])).scalar()
            if team == actor.team:
                return
        whose = "another team" if scope is Scope.TEAM else "someone else"
        raise Forbidden(f"you lack permission '{action}' on {entity} {record.get('id')}: it belongs to {whose} "
                        f"and your role {actor.role} may {action} only {scope.value} records",
                        field=None, permission=action, entity=entity)

    def check_assignee(self, connection: sa.Connection, actor: Actor, entity: str, owner: int | None) -> None:
        """Giving a record to `owner` needs the assign permission covering that user."""
        if actor.is_system or owner == actor.id:
            return
        scope = self.require(actor, entity, "assign")
        if scope is Scope.ALL or owner is None:
            return
        users = self.schema.users
        team = connection.execute(sa.select(users.c.team).where(users.c.id == owner)).scalar()
        if scope is Scope.TEAM and actor.team and team == actor.team:
            return
        raise Forbidden(f"you may assign {entity} records only within your {scope.value} scope; "
                        f"user {owner} is outside it", field="owner", permission="assign", entity=entity)

    def check_writable(self, actor: Actor, entity: str, names: Iterable[str]) -> None:
        """Forbidden if the change touches a field hidden or read-only for the actor's role."""
        permissions = self.permissions(actor, entity)
        spec_of = self.model.entity(entity)
        for name in names:
            if name in permissions.hidden or name in permissions.readonly:
                raise Forbidden(f"you may not change field '{name}' of {entity} (read-only for role {actor.role})",
                                field=name, permission="update", entity=entity)
            if not actor.is_system and spec_of.has_field(name):
                spec = spec_of.field(name)
                if spec.is_readonly and spec.type is not FieldType.COMPUTED:  # computed: refused as such later
                    raise Forbidden(f"field '{name}' of {entity} is read-only (`readonly: true` in the blueprint): "
                                    "only the engine's rules and integrations fill it", field=name,
                                    permission="update", entity=entity)

    def check_readable(self, actor: Actor, entity: str, names: Iterable[str]) -> None:
        """Filtering, sorting or searching by a hidden field would reveal it: refused."""
        hidden = self.permissions(actor, entity).hidden
        for name in names:
            if name in hidden:
                raise Forbidden(f"field '{name}' of {entity} is hidden for role {actor.role}", field=name,
                                permission="read", entity=entity)

    def redact(self, actor: Actor, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record without the fields hidden from the actor."""
        hidden = self.permissions(actor, entity).hidden
        if not hidden:
            return record
        return {name: value for name, value in record.items()
                if name not in hidden and name.removesuffix("_currency") not in hidden}

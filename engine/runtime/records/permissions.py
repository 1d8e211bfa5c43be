"""Who may do what to which records, from the blueprint's roles — enforced inside RecordService.

Scopes: `own` means records the actor owns, `team` records owned by anyone in the actor's
team (including the actor) and the unowned records the team `covers` (roles.yaml `teams:`),
`all` every record, `none` nothing; a role's `via` user fields add the records naming the actor. A refusal is a 403 that
names the permission and the entity, never an empty list that looks like lost data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import FieldType, Metamodel
from engine.metamodel.roles import ADMIN_ROLE, FULL, EntityPermissions, Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.conditions import row_condition_sql
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

    def row_condition(self, actor: Actor, entity: str, action: str, table: sa.Table, *, dialect: str = "sqlite",
                      now: dt.datetime | None = None) -> Any:
        """A WHERE condition limiting rows to the actor's scope (None: no limit): records they own;
        with `team`, records owned by their team and the unowned ones their team covers (roles.yaml
        `teams:`); under every scope, records naming them in one of the role's `via` user fields."""
        branches = self.row_branches(actor, entity, action, table, dialect=dialect, now=now)
        if branches is None:
            return None
        return branches[0] if len(branches) == 1 else sa.or_(*branches)

    def row_branches(self, actor: Actor, entity: str, action: str, table: sa.Table, *, dialect: str = "sqlite",
                     now: dt.datetime | None = None) -> list[Any] | None:
        """`row_condition` as the conditions it ORs (None: no limit). Each branch alone can use an
        index, which an OR of them under other conditions cannot on SQLite: a figure over many rows
        ANDs its own conditions into every branch (analytics). The team's members include the
        actor, so under `team` the team's condition alone stands for "owned by me or my team"."""
        scope = self.require(actor, entity, action)
        if scope is Scope.ALL:
            return None
        parts: list[Any] = [table.c.owner == actor.id]
        if scope is Scope.TEAM and actor.team:
            users = self.schema.users
            parts = [table.c.owner.in_(sa.select(users.c.id).where(users.c.team == actor.team))]
            unowned = self._covered(actor, entity, table, dialect, now)
            if unowned is not None:
                parts.append(unowned)
        parts += [table.c[name] == actor.id for name in self.permissions(actor, entity).via]
        return parts

    def _covered(self, actor: Actor, entity: str, table: sa.Table, dialect: str, now: dt.datetime | None) -> Any:
        """The unowned records the actor's team covers, as a condition (None: none)."""
        team = self.model.team(actor.team)
        condition = team.unowned(entity) if team is not None else None
        if condition is None:
            return None
        return sa.and_(table.c.owner.is_(None), row_condition_sql(
            condition, self.model.entity(entity), table, kinds=self.schema.kinds, dialect=dialect, me=actor.id,
            now=now or dt.datetime.now(dt.timezone.utc), timezone=self.model.settings.timezone))

    def covers(self, connection: sa.Connection, actor: Actor, entity: str, record: Mapping[str, Any]) -> bool:
        """Whether the record, unowned, is one the actor's team covers, or names the actor in a `via` field."""
        if any(record.get(name) == actor.id for name in self.permissions(actor, entity).via):
            return True
        if record.get("owner") is not None or not actor.team or record.get("id") is None:
            return False
        table = self.schema.table(entity)
        condition = self._covered(actor, entity, table, connection.dialect.name, None)
        if condition is None:
            return False
        return connection.execute(sa.select(table.c.id).where(table.c.id == record["id"], condition)).first() is not None

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
        if scope is Scope.TEAM and self.covers(connection, actor, entity, record):
            return
        if scope is not Scope.TEAM and any(record.get(name) == actor.id
                                            for name in self.permissions(actor, entity).via):
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

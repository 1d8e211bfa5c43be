"""Users: the people records are owned by, events are attributed to and roles are given to."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.engine import Runtime
from engine.runtime.records.actors import Actor
from engine.runtime.web.auth import hash_password


@dataclass(frozen=True, slots=True)
class NewUser:
    username: str
    display_name: str
    role: str
    team: str | None = None
    manager: str | None = None
    email: str | None = None
    phone: str | None = None
    language: str = "zh"
    password: str | None = None
    im_ids: Mapping[str, str] | None = None  # channel type → the person's id there, for @mentions


CHAT_TYPES = ("dingtalk", "wecom", "feishu", "slack")


def parse_im_ids(pairs: Iterable[str]) -> dict[str, str]:
    """`feishu=ou_3a…`, `slack=U024BE7LH` … as a mapping; ValueError naming what is wrong."""
    ids: dict[str, str] = {}
    for pair in pairs:
        kind, sep, value = pair.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in CHAT_TYPES:
            raise ValueError(f"'{pair}': write TYPE=ID with TYPE one of {', '.join(CHAT_TYPES)} "
                             "(e.g. feishu=ou_7d8a6e6df7621556ce0d21922b676706)")
        ids[kind] = value.strip()
    return ids


def _require_role(runtime: Runtime, role: str) -> None:
    if not runtime.model.has_role(role):
        known = ", ".join(spec.name for spec in runtime.model.roles)
        raise ValueError(f"role '{role}' is not declared in the blueprint (known: {known})")


def add_user(runtime: Runtime, user: NewUser) -> Actor:
    """Create a user (the manager, if named, must exist already) and return it as an actor."""
    _require_role(runtime, user.role)
    if user.password is not None and len(user.password) < 8:
        raise ValueError("a password needs at least 8 characters")
    users = runtime.schema.users
    now = runtime.clock.now().astimezone(dt.timezone.utc).replace(tzinfo=None)
    with runtime.db.write() as connection:
        if connection.execute(sa.select(users.c.id).where(users.c.username == user.username)).first():
            raise ValueError(f"user '{user.username}' already exists")
        manager_id = None
        if user.manager:
            manager_id = connection.execute(sa.select(users.c.id).where(users.c.username == user.manager)).scalar()
            if manager_id is None:
                raise ValueError(f"manager '{user.manager}' does not exist; add that user first")
        user_id = connection.execute(users.insert().values(
            username=user.username, display_name=user.display_name, role=user.role, team=user.team,
            manager_id=manager_id, email=user.email, phone=user.phone, language=user.language,
            is_active=True, on_leave=False, created_at=now, im_ids=dict(user.im_ids or {}) or None,
            password_hash=hash_password(user.password) if user.password else None)).inserted_primary_key[0]
    return Actor(user_id, user.username, user.role, user.team)


def list_users(runtime: Runtime) -> list[Any]:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        return list(connection.execute(sa.select(users).order_by(users.c.id)))


def update_user(runtime: Runtime, username: str, **values: Any) -> None:
    """Change role, team, is_active, on_leave, display_name, language … of one user."""
    if "role" in values:
        _require_role(runtime, values["role"])
    users = runtime.schema.users
    with runtime.db.write() as connection:
        result = connection.execute(users.update().where(users.c.username == username).values(**values))
        if result.rowcount != 1:
            raise ValueError(f"there is no user '{username}'")


def find_user(runtime: Runtime, username: str) -> Actor | None:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        row: Any = connection.execute(sa.select(users).where(users.c.username == username)).first()
    return None if row is None else Actor(row.id, row.username, row.role, row.team)

"""Users: the people records are owned by and events are attributed to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .actors import Actor
from .runtime import Runtime


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


def add_user(runtime: Runtime, user: NewUser) -> Actor:
    """Create a user (the manager, if named, must exist already) and return it as an actor."""
    users = runtime.schema.users
    now = runtime.clock.now().replace(tzinfo=None)
    with runtime.db.write() as connection:
        manager_id = None
        if user.manager:
            manager_id = connection.execute(sa.select(users.c.id).where(users.c.username == user.manager)).scalar()
            if manager_id is None:
                raise ValueError(f"manager '{user.manager}' does not exist; add that user first")
        user_id = connection.execute(users.insert().values(
            username=user.username, display_name=user.display_name, role=user.role, team=user.team,
            manager_id=manager_id, email=user.email, phone=user.phone, language=user.language,
            is_active=True, created_at=now)).inserted_primary_key[0]
    return Actor(user_id, user.username, user.role, user.team)


def find_user(runtime: Runtime, username: str) -> Actor | None:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        row: Any = connection.execute(sa.select(users).where(users.c.username == username)).first()
    return None if row is None else Actor(row.id, row.username, row.role, row.team)

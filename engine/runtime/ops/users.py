"""Users: the people records are owned by, events are attributed to and roles are given to —
and how they prove who they are (passwords, sign-in throttling, API tokens).

`Users` receives what it works with: the blueprint (roles), the database and the clock, and
the password hasher — argon2 with safe parameters in the product, cheap ones in tests.
Failed sign-ins are counted in the database (not in process memory), so throttling holds
across web processes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from engine.metamodel import Metamodel
from engine.metamodel.channels import CHANNEL_TYPES
from engine.rules import Clock
from engine.runtime.records.actors import Actor
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import LOGINS, TOKENS, Schema
from engine.runtime.storage.times import naive_utc

MAX_FAILURES = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 8


class LoginRefused(Exception):
    """Wrong credentials or too many attempts; the message is safe to show. `key` and `values`
    name the screens' text for it (the message catalogue), in the user's language."""

    def __init__(self, message: str, key: str = "login_wrong", **values: Any) -> None:
        super().__init__(message)
        self.key = key
        self.values = values


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


def chat_types(channel_types: Collection[str]) -> tuple[str, ...]:
    """The shipped chat types, and every channel type a plugin adds (it may mention people by id)."""
    return (*CHAT_TYPES, *sorted(set(channel_types) - set(CHANNEL_TYPES)))


def parse_im_ids(pairs: Iterable[str], types: Collection[str] = CHAT_TYPES) -> dict[str, str]:
    """`feishu=ou_3a…`, `slack=U024BE7LH` … as a mapping; ValueError naming what is wrong.
    `types`: the chat types that may be named (`chat_types` of the engine's channels)."""
    ids: dict[str, str] = {}
    for pair in pairs:
        kind, sep, value = pair.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in types:
            raise ValueError(f"'{pair}': write TYPE=ID with TYPE one of {', '.join(types)} "
                             "(e.g. feishu=ou_7d8a6e6df7621556ce0d21922b676706)")
        ids[kind] = value.strip()
    return ids


def actor_of(row: Any) -> Actor:
    return Actor(row.id, row.username, row.role, row.team)


class Users:
    """People and their credentials."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, clock: Clock,
                 hasher: PasswordHasher | None = None) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.clock = clock
        self.hasher = hasher or PasswordHasher()

    def _require_role(self, role: str) -> None:
        if not self.model.has_role(role):
            known = ", ".join(spec.name for spec in self.model.roles)
            raise ValueError(f"role '{role}' is not declared in the blueprint (known: {known})")

    def hash_password(self, password: str) -> str:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        return self.hasher.hash(password)

    def add(self, user: NewUser) -> Actor:
        """Create a user (the manager, if named, must exist already) and return it as an actor."""
        self._require_role(user.role)
        password_hash = self.hash_password(user.password) if user.password is not None else None
        users = self.schema.users
        now = naive_utc(self.clock.now())
        with self.db.write() as connection:
            if connection.execute(sa.select(users.c.id).where(users.c.username == user.username)).first():
                raise ValueError(f"user '{user.username}' already exists")
            manager_id = None
            if user.manager:
                manager_id = connection.execute(sa.select(users.c.id).where(users.c.username == user.manager)).scalar()
                if manager_id is None:
                    raise ValueError(f"manager '{user.manager}' does not exist; add that user first")
            key = connection.execute(users.insert().values(
                username=user.username, display_name=user.display_name, role=user.role, team=user.team,
                manager_id=manager_id, email=user.email, phone=user.phone, language=user.language,
                is_active=True, on_leave=False, created_at=now, im_ids=dict(user.im_ids or {}) or None,
                password_hash=password_hash)).inserted_primary_key
            assert key is not None  # None only for statements other than an INSERT
            user_id = key[0]
        return Actor(user_id, user.username, user.role, user.team)

    def all(self) -> list[Any]:
        users = self.schema.users
        with self.db.read() as connection:
            return list(connection.execute(sa.select(users).order_by(users.c.id)))

    def update(self, username: str, **values: Any) -> None:
        """Change role, team, is_active, on_leave, display_name, language … of one user."""
        if "role" in values:
            self._require_role(values["role"])
        users = self.schema.users
        with self.db.write() as connection:
            result = connection.execute(users.update().where(users.c.username == username).values(**values))
            if result.rowcount != 1:
                raise ValueError(f"there is no user '{username}'")

    def find(self, username: str) -> Actor | None:
        users = self.schema.users
        with self.db.read() as connection:
            row: Any = connection.execute(sa.select(users).where(users.c.username == username)).first()
        return None if row is None else actor_of(row)

    def set_password(self, username: str, password: str) -> None:
        password_hash = self.hash_password(password)
        users = self.schema.users
        with self.db.write() as connection:
            result = connection.execute(users.update().where(users.c.username == username)
                                        .values(password_hash=password_hash))
            if result.rowcount != 1:
                raise ValueError(f"there is no user '{username}'")

    def login(self, username: str, password: str, client: str) -> Actor:
        """The actor for these credentials; LoginRefused after a wrong password, an unknown or
        disabled user, or when this user or client has failed too often recently."""
        users, attempts = self.schema.users, self.schema.metadata.tables[LOGINS]
        now = self.clock.now()
        since = naive_utc(now - FAILURE_WINDOW)
        with self.db.read() as connection:
            failures = connection.execute(sa.select(sa.func.count()).select_from(attempts).where(
                attempts.c.at >= since, attempts.c.succeeded.is_(False),
                sa.or_(attempts.c.username == username, attempts.c.client == client))).scalar_one()
            row = connection.execute(sa.select(users).where(users.c.username == username)).first()
        if failures >= MAX_FAILURES:
            minutes = int(FAILURE_WINDOW.total_seconds() // 60)
            raise LoginRefused(f"too many failed sign-ins; try again in {minutes} minutes or ask an administrator",
                               "login_locked", minutes=minutes)
        ok = row is not None and row.is_active and row.password_hash is not None and self._verify(
            row.password_hash, password)
        with self.db.write() as connection:
            connection.execute(attempts.insert().values(username=username[:64], client=client[:64],
                                                        at=naive_utc(now), succeeded=ok))
        if not ok:
            raise LoginRefused("wrong username or password")
        return actor_of(row)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    def create_token(self, username: str, name: str = "api") -> str:
        """A new API token for the user; only its hash is stored, so it is shown once."""
        users, tokens = self.schema.users, self.schema.metadata.tables[TOKENS]
        token = "crm_" + secrets.token_urlsafe(32)
        with self.db.write() as connection:
            user_id = connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar()
            if user_id is None:
                raise ValueError(f"there is no user '{username}'")
            connection.execute(tokens.insert().values(user_id=user_id, name=name[:64],
                                                      created_at=naive_utc(self.clock.now()),
                                                      token_sha256=hashlib.sha256(token.encode()).hexdigest()))
        return token

    def tokens(self, username: str) -> list[Any]:
        """The user's API tokens (name, created, last used, revoked) — never the token itself."""
        users, tokens = self.schema.users, self.schema.metadata.tables[TOKENS]
        with self.db.read() as connection:
            return list(connection.execute(
                sa.select(tokens.c.id, tokens.c.name, tokens.c.created_at, tokens.c.last_used_at, tokens.c.revoked_at)
                .join(users, users.c.id == tokens.c.user_id).where(users.c.username == username)
                .order_by(tokens.c.id.desc())))

    def revoke_token(self, username: str, token_id: int) -> str:
        """Revoke one of the user's tokens at once (API calls with it get 401); its name."""
        users, tokens = self.schema.users, self.schema.metadata.tables[TOKENS]
        with self.db.write() as connection:
            row = connection.execute(sa.select(tokens.c.id, tokens.c.name).join(users, users.c.id == tokens.c.user_id)
                                     .where(users.c.username == username, tokens.c.id == token_id)).first()
            if row is None:
                raise ValueError(f"user '{username}' has no token {token_id}")
            connection.execute(tokens.update().where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                               .values(revoked_at=naive_utc(self.clock.now())))
            return str(row.name)

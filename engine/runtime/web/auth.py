"""Authentication: passwords (argon2), login throttling, API tokens, and the request's actor.

A browser signs in once and carries a signed, expiring session cookie holding its user id;
an API client sends `Authorization: Bearer <token>`. Either way the user row is read on
every request, so disabling a user or changing a role takes effect at once. Failed logins
are counted in the database (not in process memory), so throttling holds across workers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.engine import Runtime
from engine.runtime.records.actors import Actor
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import LOGINS, SETTINGS, TOKENS

MAX_FAILURES = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
SESSION_MAX_AGE = 8 * 3600
_hasher = PasswordHasher()


class LoginRefused(Exception):
    """Wrong credentials or too many attempts; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    display_name: str
    role: str | None
    team: str | None
    is_active: bool
    on_leave: bool
    manager_id: int | None
    language: str | None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def actor_of(row: Any) -> Actor:
    return Actor(row.id, row.username, row.role, row.team)


class UserLookups:
    """The two look-ups every request makes, built once with bound parameters."""

    def __init__(self, runtime: Runtime) -> None:
        users, tokens = runtime.schema.users, runtime.schema.metadata.tables[TOKENS]
        self.runtime = runtime
        self._by_id = Prepared(sa.select(users).where(users.c.id == sa.bindparam("id"), users.c.is_active))
        self._by_token = Prepared(sa.select(users).join(tokens, tokens.c.user_id == users.c.id).where(
            tokens.c.token_sha256 == sa.bindparam("digest"), tokens.c.revoked_at.is_(None), users.c.is_active))

    def by_id(self, user_id: int) -> Actor | None:
        """The active user with this id as an actor, or None."""
        row = self.runtime.db.lookup(self._by_id, {"id": user_id})
        return None if row is None else actor_of(row)

    def by_token(self, token: str) -> Actor | None:
        """The active user an unrevoked API token belongs to, or None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        row = self.runtime.db.lookup(self._by_token, {"digest": digest})
        return None if row is None else actor_of(row)


def set_password(runtime: Runtime, username: str, password: str) -> None:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    users = runtime.schema.users
    with runtime.db.write() as connection:
        result = connection.execute(users.update().where(users.c.username == username)
                                    .values(password_hash=hash_password(password)))
        if result.rowcount != 1:
            raise ValueError(f"there is no user '{username}'")


def login(runtime: Runtime, username: str, password: str, client: str) -> Actor:
    """The actor for these credentials; LoginRefused after a wrong password, an unknown or
    disabled user, or when this user or client has failed too often recently."""
    users, attempts = runtime.schema.users, runtime.schema.metadata.tables[LOGINS]
    now = runtime.clock.now()
    since = _naive(now - FAILURE_WINDOW)
    with runtime.db.read() as connection:
        failures = connection.execute(sa.select(sa.func.count()).select_from(attempts).where(
            attempts.c.at >= since, attempts.c.succeeded.is_(False),
            sa.or_(attempts.c.username == username, attempts.c.client == client))).scalar_one()
        row = connection.execute(sa.select(users).where(users.c.username == username)).first()
    if failures >= MAX_FAILURES:
        raise LoginRefused(f"too many failed sign-ins; try again in {int(FAILURE_WINDOW.total_seconds() // 60)} "
                           "minutes or ask an administrator")
    ok = row is not None and row.is_active and row.password_hash is not None and _verify(row.password_hash, password)
    with runtime.db.write() as connection:
        connection.execute(attempts.insert().values(username=username[:64], client=client[:64], at=_naive(now),
                                                    succeeded=ok))
    if not ok:
        raise LoginRefused("wrong username or password")
    return actor_of(row)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_token(runtime: Runtime, username: str, name: str = "api") -> str:
    """A new API token for the user; only its hash is stored, so it is shown once."""
    users, tokens = runtime.schema.users, runtime.schema.metadata.tables[TOKENS]
    token = "crm_" + secrets.token_urlsafe(32)
    with runtime.db.write() as connection:
        user_id = connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise ValueError(f"there is no user '{username}'")
        connection.execute(tokens.insert().values(user_id=user_id, name=name[:64], created_at=_naive(runtime.clock.now()),
                                                  token_sha256=hashlib.sha256(token.encode()).hexdigest()))
    return token


def session_secret(runtime: Runtime) -> str:
    """The cookie-signing key: CRM_SECRET_KEY, else one generated once and kept in the database
    so every web process of an installation signs alike."""
    import os
    configured = os.environ.get("CRM_SECRET_KEY")
    if configured:
        return configured
    settings = runtime.schema.metadata.tables[SETTINGS]
    with runtime.db.write() as connection:
        value = connection.execute(sa.select(settings.c.value).where(settings.c.key == "session_secret")).scalar()
        if value is None:
            value = secrets.token_urlsafe(48)
            connection.execute(settings.insert().values(key="session_secret", value=value))
    return str(value)


class AuthMiddleware:
    """Sets `scope["state"]["actor"]` from the session (None when anonymous). A bearer token is
    only noted (`state["bearer"]`): the JSON API resolves it in the same worker-thread call as
    the request's work, saving a thread hop per API request."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.lookups = UserLookups(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from starlette.concurrency import run_in_threadpool
            connection = HTTPConnection(scope)
            actor: Actor | None = None
            header = connection.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                # resolved by the API inside its own worker-thread call: one thread hop per request
                scope.setdefault("state", {})["bearer"] = header[7:].strip()
            elif "session" in scope and isinstance(scope["session"].get("user_id"), int):
                actor = await run_in_threadpool(self.lookups.by_id, scope["session"]["user_id"])
                if actor is None:
                    scope["session"].clear()
            scope.setdefault("state", {})["actor"] = actor
        await self.app(scope, receive, send)

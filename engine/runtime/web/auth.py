"""Authentication on the web: the request's actor, from a session cookie or an API token.

Passwords, sign-in throttling and tokens are the users' (engine/runtime/ops/users.py); this
module reads them on every request. A browser signs in once and carries a signed, expiring session cookie holding its user id;
an API client sends `Authorization: Bearer <token>`. Either way the user row is read on
every request, so disabling a user or changing a role takes effect at once.
"""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.runtime.records.actors import Actor
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import SETTINGS, TOKENS
from engine.runtime.ops.users import actor_of
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema

SESSION_MAX_AGE = 8 * 3600


class UserLookups:
    """The two look-ups every request makes, built once with bound parameters."""

    def __init__(self, db: Database, schema: Schema) -> None:
        users, tokens = schema.users, schema.metadata.tables[TOKENS]
        self.db = db
        self._by_id = Prepared(sa.select(users).where(users.c.id == sa.bindparam("id"), users.c.is_active))
        self._by_token = Prepared(sa.select(users).join(tokens, tokens.c.user_id == users.c.id).where(
            tokens.c.token_sha256 == sa.bindparam("digest"), tokens.c.revoked_at.is_(None), users.c.is_active))

    def by_id(self, user_id: int) -> Actor | None:
        """The active user with this id as an actor, or None."""
        row = self.db.lookup(self._by_id, {"id": user_id})
        return None if row is None else actor_of(row)

    def by_token(self, token: str) -> Actor | None:
        """The active user an unrevoked API token belongs to, or None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        row = self.db.lookup(self._by_token, {"digest": digest})
        return None if row is None else actor_of(row)


def session_secret(db: Database, schema: Schema) -> str:
    """The cookie-signing key: CRM_SECRET_KEY, else one generated once and kept in the database
    so every web process of an installation signs alike."""
    import os
    configured = os.environ.get("CRM_SECRET_KEY")
    if configured:
        return configured
    settings = schema.metadata.tables[SETTINGS]
    with db.write() as connection:
        value = connection.execute(sa.select(settings.c.value).where(settings.c.key == "session_secret")).scalar()
        if value is None:
            value = secrets.token_urlsafe(48)
            connection.execute(settings.insert().values(key="session_secret", value=value))
    return str(value)


class AuthMiddleware:
    """Sets `scope["state"]["actor"]` from the session (None when anonymous). A bearer token is
    only noted (`state["bearer"]`): the JSON API resolves it in the same worker-thread call as
    the request's work, saving a thread hop per API request."""

    def __init__(self, app: ASGIApp, lookups: UserLookups) -> None:
        self.app = app
        self.lookups = lookups

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

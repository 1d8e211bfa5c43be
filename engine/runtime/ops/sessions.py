"""Browser sessions and API tokens, kept in the database so either can be revoked at once.

A browser's cookie carries only a random session key (signed by the cookie middleware as
well); the database keeps its SHA-256, the user, when it was started and last used, when it
expires and whether it was revoked. Signing out revokes the session, "sign out everywhere",
a password change or disabling the user revoke all of the user's sessions. A stolen cookie
copied before any of these is worthless after it.

API tokens are stored the same way (hash only, shown once), with a name, a scope (`read`:
GET only, or `write`), an expiry, the last time each was used, and single revocation
(`crm token revoke ID`, or the admin's user screen).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.rules import Clock
from engine.runtime.records.actors import Actor
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import SESSIONS, TOKENS, Schema
from engine.runtime.storage.times import as_utc, naive_utc

SESSION_IDLE = dt.timedelta(hours=8)      # unused this long: signed out
SESSION_LONGEST = dt.timedelta(days=7)    # however busy: sign in again after this
TOUCH_EVERY = dt.timedelta(minutes=1)     # last_seen_at is written at most this often
TOKEN_DAYS = 90                           # a token's default lifetime
TOKEN_SCOPES = ("read", "write")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    username: str
    name: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        return "revoked" if self.revoked_at else "active"


def _actor(row: Any) -> Actor:
    return Actor(row.id, row.username, row.role, row.team)


class Sessions:
    """Server-side sessions and API tokens of one installation."""

    def __init__(self, schema: Schema, db: Database, clock: Clock) -> None:
        self.schema, self.db, self.clock = schema, db, clock
        self.table = schema.metadata.tables[SESSIONS]
        self.tokens = schema.metadata.tables[TOKENS]

    # -- sessions ---------------------------------------------------------------------------

    def start(self, user_id: int, client: str, user_agent: str = "") -> str:
        """A new session for the user (after a successful sign-in); the key for the cookie."""
        key = secrets.token_urlsafe(32)
        now = naive_utc(self.clock.now())
        with self.db.write() as connection:
            connection.execute(self.table.insert().values(
                key_sha256=digest(key), user_id=user_id, created_at=now, last_seen_at=now,
                expires_at=now + SESSION_LONGEST, client=client[:64], user_agent=user_agent[:255]))
        return key

    def actor(self, key: str) -> Actor | None:
        """The active user of a live session, or None (unknown, revoked, idle too long, expired)."""
        if not key or len(key) > 128:
            return None
        users, sessions = self.schema.users, self.table
        now = naive_utc(self.clock.now())
        with self.db.read() as connection:
            row = connection.execute(
                sa.select(users, sessions.c.id.label("session_id"), sessions.c.last_seen_at)
                .join(sessions, sessions.c.user_id == users.c.id)
                .where(sessions.c.key_sha256 == digest(key), sessions.c.revoked_at.is_(None),
                       sessions.c.expires_at > now, sessions.c.last_seen_at > now - SESSION_IDLE,
                       users.c.is_active)).first()
        if row is None:
            return None
        if row.last_seen_at < now - TOUCH_EVERY:
            with self.db.write() as connection:
                connection.execute(sessions.update().where(sessions.c.id == row.session_id)
                                   .values(last_seen_at=now))
        return _actor(row)

    def end(self, key: str) -> None:
        """Sign-out: this session is revoked."""
        with self.db.write() as connection:
            connection.execute(self.table.update().where(
                self.table.c.key_sha256 == digest(key), self.table.c.revoked_at.is_(None))
                .values(revoked_at=naive_utc(self.clock.now())))

    def end_all(self, user_id: int, connection: sa.Connection | None = None) -> int:
        """Every live session of the user is revoked (sign out everywhere, password change,
        disabled user); how many were."""
        statement = self.table.update().where(self.table.c.user_id == user_id, self.table.c.revoked_at.is_(None)) \
            .values(revoked_at=naive_utc(self.clock.now()))
        if connection is not None:
            return int(connection.execute(statement).rowcount)
        with self.db.write() as own:
            return int(own.execute(statement).rowcount)

    def live_count(self, user_id: int) -> int:
        now = naive_utc(self.clock.now())
        with self.db.read() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(self.table).where(
                self.table.c.user_id == user_id, self.table.c.revoked_at.is_(None),
                self.table.c.expires_at > now, self.table.c.last_seen_at > now - SESSION_IDLE)).scalar_one())

    def prune(self, older_than: dt.timedelta = dt.timedelta(days=30)) -> int:
        """Delete sessions that ended (revoked or expired) more than `older_than` ago."""
        cutoff = naive_utc(self.clock.now()) - older_than
        with self.db.write() as connection:
            return int(connection.execute(self.table.delete().where(sa.or_(
                self.table.c.expires_at < cutoff, self.table.c.revoked_at < cutoff))).rowcount)

    # -- API tokens ---------------------------------------------------------------------------

    def create_token(self, user_id: int, name: str = "api", *, scope: str = "write",
                     days: int | None = TOKEN_DAYS) -> str:
        """A new token (shown once: only its hash is kept). `days=None`: it never expires."""
        if scope not in TOKEN_SCOPES:
            raise ValueError(f"scope '{scope}' is not one of {', '.join(TOKEN_SCOPES)}")
        if days is not None and not 1 <= days <= 3650:
            raise ValueError("a token lives between 1 and 3650 days")
        token = "crm_" + secrets.token_urlsafe(32)
        now = naive_utc(self.clock.now())
        with self.db.write() as connection:
            connection.execute(self.tokens.insert().values(
                user_id=user_id, name=name[:64], created_at=now, token_sha256=digest(token), scope=scope,
                expires_at=None if days is None else now + dt.timedelta(days=days)))
        return token

    def token_actor(self, token: str) -> tuple[Actor, str] | None:
        """The active user a live token belongs to and the token's scope, or None."""
        if not token or len(token) > 128:
            return None
        users, tokens = self.schema.users, self.tokens
        now = naive_utc(self.clock.now())
        with self.db.read() as connection:
            row = connection.execute(
                sa.select(users, tokens.c.id.label("token_id"), tokens.c.scope, tokens.c.last_used_at)
                .join(tokens, tokens.c.user_id == users.c.id)
                .where(tokens.c.token_sha256 == digest(token), tokens.c.revoked_at.is_(None),
                       sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now), users.c.is_active)).first()
        if row is None:
            return None
        if row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY:
            with self.db.write() as connection:
                connection.execute(tokens.update().where(tokens.c.id == row.token_id).values(last_used_at=now))
        return _actor(row), row.scope or "write"

    def list_tokens(self, user_id: int | None = None) -> list[TokenInfo]:
        users, tokens = self.schema.users, self.tokens
        query = sa.select(tokens, users.c.username).join(users, users.c.id == tokens.c.user_id).order_by(tokens.c.id)
        if user_id is not None:
            query = query.where(tokens.c.user_id == user_id)
        with self.db.read() as connection:
            rows = connection.execute(query).all()
        return [TokenInfo(row.id, row.username, row.name, row.scope or "write", as_utc(row.created_at),
                          as_utc(row.expires_at) if row.expires_at else None,
                          as_utc(row.last_used_at) if row.last_used_at else None,
                          as_utc(row.revoked_at) if row.revoked_at else None) for row in rows]

    def revoke_token(self, token_id: int, user_id: int | None = None) -> None:
        """Revoke one token (of `user_id` when given); ValueError when there is no such live token."""
        condition = sa.and_(self.tokens.c.id == token_id, self.tokens.c.revoked_at.is_(None))
        if user_id is not None:
            condition = sa.and_(condition, self.tokens.c.user_id == user_id)
        with self.db.write() as connection:
            if connection.execute(self.tokens.update().where(condition)
                                  .values(revoked_at=naive_utc(self.clock.now()))).rowcount != 1:
                raise ValueError(f"there is no unrevoked token {token_id}")

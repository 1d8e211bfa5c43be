"""Users: the people records are owned by, events are attributed to and roles are given to —
and how they prove who they are (passwords, sign-in throttling, API tokens).

`Users` receives what it works with: the blueprint (roles), the database and the clock, and
the password hasher — argon2 with safe parameters in the product, cheap ones in tests.
Failed sign-ins are counted in the database (not in process memory), so throttling holds
across web processes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from engine.metamodel import Metamodel
from engine.metamodel.channels import CHANNEL_TYPES
from engine.rules import Clock
from engine.runtime.ops.sessions import TOKEN_DAYS, Sessions, TokenInfo
from engine.runtime.records.actors import Actor
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import LOGINS, Schema
from engine.runtime.storage.times import naive_utc

MAX_FAILURES = 5                # failed sign-ins of one account from one address, per window
MAX_CLIENT_FAILURES = 20        # failed sign-ins from one address, whatever the account
BACKOFF_AFTER = 10              # failed sign-ins of one account from all addresses before each waits longer
MAX_BACKOFF = dt.timedelta(minutes=15)
FAILURE_WINDOW = dt.timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 10
_COMMON = frozenset(line.strip().lower() for line in
                    (Path(__file__).with_name("common_passwords.txt")).read_text(encoding="utf-8").splitlines()
                    if line.strip() and not line.startswith("#"))


class LoginRefused(Exception):
    """Wrong credentials or too many attempts; the message is safe to show. `throttled`: refused
    without looking at the password (HTTP 429). `key` and `values` name the screens' text for it
    (the message catalogue), in the user's language."""

    def __init__(self, message: str, key: str = "login_wrong", *, throttled: bool = False, **values: Any) -> None:
        super().__init__(message)
        self.key = key
        self.values = values
        self.throttled = throttled


def password_problem(password: str, username: str = "") -> str | None:
    """Why a password is too weak, or None (length ≥ 10, not a common password, not the username)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters (密码至少 {MIN_PASSWORD_LENGTH} 位)"
    if len(password) > 256:
        return "a password may have at most 256 characters (密码最多 256 位)"
    lowered = password.lower()
    rest = lowered.replace(username.lower(), "") if username else lowered
    if lowered in _COMMON or len(set(password)) <= 2 or len(rest) < 4:
        return "this password is too common or too easy to guess; choose another (密码过于常见或易猜，请换一个)"
    return None


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
        self.sessions = Sessions(schema, db, clock)

    def _require_role(self, role: str) -> None:
        if not self.model.has_role(role):
            known = ", ".join(spec.name for spec in self.model.roles)
            raise ValueError(f"role '{role}' is not declared in the blueprint (known: {known})")

    def hash_password(self, password: str, username: str = "") -> str:
        problem = password_problem(password, username)
        if problem:
            raise ValueError(problem)
        return self.hasher.hash(password)

    @functools.cached_property
    def _dummy_hash(self) -> str:
        """Verified against for an unknown or disabled user, so the answer takes as long as for a known one."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    def add(self, user: NewUser) -> Actor:
        """Create a user (the manager, if named, must exist already) and return it as an actor."""
        self._require_role(user.role)
        password_hash = self.hash_password(user.password, user.username) if user.password is not None else None
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
        """Change role, team, is_active, on_leave, display_name, language … of one user. Disabling
        a user revokes their sessions."""
        if "role" in values:
            self._require_role(values["role"])
        users = self.schema.users
        with self.db.write() as connection:
            result = connection.execute(users.update().where(users.c.username == username).values(**values))
            if result.rowcount != 1:
                raise ValueError(f"there is no user '{username}'")
            if values.get("is_active") is False:
                user_id = connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
                self.sessions.end_all(user_id, connection)

    def find(self, username: str) -> Actor | None:
        users = self.schema.users
        with self.db.read() as connection:
            row: Any = connection.execute(sa.select(users).where(users.c.username == username)).first()
        return None if row is None else actor_of(row)

    def set_password(self, username: str, password: str) -> None:
        """A new password; every session of the user is signed out."""
        password_hash = self.hash_password(password, username)
        users = self.schema.users
        with self.db.write() as connection:
            result = connection.execute(users.update().where(users.c.username == username)
                                        .values(password_hash=password_hash))
            if result.rowcount != 1:
                raise ValueError(f"there is no user '{username}'")
            user_id = connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
            self.sessions.end_all(user_id, connection)

    def login(self, username: str, password: str, client: str) -> Actor:
        """The actor for these credentials; LoginRefused after a wrong password, an unknown or
        disabled user, or when this account (from this address), this address, or this account
        (from everywhere, with a growing wait) has failed too often recently.

        The attempt is reserved (counted and recorded as failed) in one write transaction before
        the password is checked, so parallel attempts all see each other; a correct password then
        marks it succeeded. An unknown user costs the same hashing as a known one."""
        users, attempts = self.schema.users, self.schema.metadata.tables[LOGINS]
        username, client = username[:64], client[:64]
        now = naive_utc(self.clock.now())
        since = now - FAILURE_WINDOW
        with self.db.write() as connection:
            if not self.db.is_sqlite:  # SQLite writers are serial already
                for key in (f"login:u:{username}", f"login:c:{client}"):
                    lock = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
            self._check_throttle(connection, attempts, username, client, since, now)
            attempt_id = connection.execute(attempts.insert().values(
                username=username, client=client, at=now, succeeded=False)).inserted_primary_key
            assert attempt_id is not None
            row = connection.execute(sa.select(users).where(users.c.username == username)).first()
        stored = row.password_hash if row is not None and row.is_active else None
        ok = self._verify(stored or self._dummy_hash, password) and stored is not None
        if not ok:
            raise LoginRefused("wrong username or password (用户名或密码错误)")
        with self.db.write() as connection:
            connection.execute(attempts.update().where(attempts.c.id == attempt_id[0]).values(succeeded=True))
        return actor_of(row)

    def _check_throttle(self, connection: sa.Connection, attempts: sa.Table, username: str, client: str,
                        since: dt.datetime, now: dt.datetime) -> None:
        failed = sa.and_(attempts.c.at >= since, attempts.c.succeeded.is_(False))

        def count(*conditions: Any) -> int:
            return int(connection.execute(sa.select(sa.func.count()).select_from(attempts)
                                          .where(failed, *conditions)).scalar_one())
        minutes = int(FAILURE_WINDOW.total_seconds() // 60)
        if count(attempts.c.username == username, attempts.c.client == client) >= MAX_FAILURES:
            raise LoginRefused(f"too many failed sign-ins for this account from your address; try again in "
                               f"{minutes} minutes (登录失败次数过多，请 {minutes} 分钟后再试)", "login_locked",
                               throttled=True, minutes=minutes)
        if count(attempts.c.client == client) >= MAX_CLIENT_FAILURES:
            raise LoginRefused(f"too many failed sign-ins from your address; try again in {minutes} minutes "
                               f"(登录失败次数过多，请 {minutes} 分钟后再试)", "login_locked",
                               throttled=True, minutes=minutes)
        everywhere = count(attempts.c.username == username)
        if everywhere >= BACKOFF_AFTER:  # many addresses guessing one account: each try waits longer
            wait = min(dt.timedelta(seconds=2 ** min(everywhere - BACKOFF_AFTER, 20)), MAX_BACKOFF)
            last = connection.execute(sa.select(sa.func.max(attempts.c.at)).where(
                failed, attempts.c.username == username)).scalar()
            if last is not None and now - last < wait:
                seconds = int((wait - (now - last)).total_seconds()) + 1
                raise LoginRefused(f"this account had many failed sign-ins; try again in {seconds} seconds "
                                   f"(该账号登录失败较多，请 {seconds} 秒后再试)", "login_wait",
                                   throttled=True, seconds=seconds)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    def user_id(self, username: str) -> int:
        users = self.schema.users
        with self.db.read() as connection:
            user_id = connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise ValueError(f"there is no user '{username}'")
        return int(user_id)

    def create_token(self, username: str, name: str = "api", *, scope: str = "write",
                     days: int | None = TOKEN_DAYS) -> str:
        """A new API token for the user; only its hash is stored, so it is shown once."""
        return self.sessions.create_token(self.user_id(username), name, scope=scope, days=days)

    def tokens(self, username: str) -> list[TokenInfo]:
        """The user's API tokens (name, scope, created, last used, expiry, revoked) — never the token itself."""
        return self.sessions.list_tokens(self.user_id(username))

    def revoke_token(self, username: str, token_id: int) -> str:
        """Revoke one of the user's tokens at once (API calls with it get 401); its name."""
        token = next((token for token in self.tokens(username) if token.id == token_id), None)
        if token is None:
            raise ValueError(f"user '{username}' has no token {token_id}")
        self.sessions.revoke_token(token_id, self.user_id(username))
        return token.name

"""Authentication on the web: the request's actor, from a server-side session or an API token.

Passwords, sign-in throttling, sessions and tokens are the users' (engine/runtime/ops/users.py,
engine/runtime/ops/sessions.py); this module reads them on every request. A browser signs in
once; its cookie (signed with the installation's secret key) holds a random session key whose
hash is a row of crm_sessions — revoked by signing out, "sign out everywhere", a password
change or disabling the user. An API client sends `Authorization: Bearer <token>`. Either
way the user row is read on every request, so a disabled user or a changed role takes effect
at once.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.runtime.ops.users import Users
from engine.runtime.records.actors import Actor

SESSION_MAX_AGE = 8 * 3600  # the cookie, re-signed on use: 8 h idle; the session row also ends at 7 days
SESSION_KEY = "sid"
MIN_SECRET_LENGTH = 32
_log = logging.getLogger(__name__)


class SecretKeyMissing(RuntimeError):
    """No usable secret key: the message says how to set one."""


def secret_key(db_url: str = "", *, required: bool = False) -> str:
    """The key signing session cookies: CRM_SECRET_KEY, else the file named by CRM_SECRET_KEY_FILE
    (created with mode 0600 when missing), else — for a SQLite database — a file beside it
    (`<database>.secret-key`, 0600). With `required` (`crm serve`), one of the two variables
    must be set. Never a built-in default, never a value kept in the database."""
    configured = os.environ.get("CRM_SECRET_KEY", "")
    if configured:
        if len(configured) < MIN_SECRET_LENGTH:
            raise SecretKeyMissing(f"CRM_SECRET_KEY has {len(configured)} characters; use at least "
                                   f"{MIN_SECRET_LENGTH} random ones, e.g. "
                                   "python -c 'import secrets; print(secrets.token_urlsafe(48))'")
        return configured
    file_name = os.environ.get("CRM_SECRET_KEY_FILE", "")
    if not file_name and required:
        raise SecretKeyMissing("set CRM_SECRET_KEY (at least 32 random characters, e.g. the output of "
                               "python -c 'import secrets; print(secrets.token_urlsafe(48))') or CRM_SECRET_KEY_FILE "
                               "(a file the server creates with mode 0600) before `crm serve`; see docs/security.md")
    if not file_name and db_url.startswith("sqlite:///") and ":memory:" not in db_url:
        file_name = db_url.removeprefix("sqlite:///").split("?")[0] + ".secret-key"
    if not file_name:  # a throw-away key: sessions end when the process does
        _log.warning("no CRM_SECRET_KEY: sessions use a key that lasts only as long as this process")
        return secrets.token_urlsafe(48)
    return _key_file(Path(file_name))


def _key_file(path: Path) -> str:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretKeyMissing(f"{path} is readable by others (mode {mode:o}); run chmod 600 {path}") from None
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < MIN_SECRET_LENGTH:
            raise SecretKeyMissing(f"{path} holds fewer than {MIN_SECRET_LENGTH} characters; delete it to get a "
                                   "new key (everyone signs in again)") from None
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(key + "\n")
    return key


class AuthMiddleware:
    """Sets `scope["state"]["actor"]` from the session (None when anonymous). A bearer token is
    only noted (`state["bearer"]`): the JSON API resolves it in the same worker-thread call as
    the request's work, saving a thread hop per API request."""

    def __init__(self, app: ASGIApp, users: Users) -> None:
        self.app = app
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from starlette.concurrency import run_in_threadpool
            connection = HTTPConnection(scope)
            actor: Actor | None = None
            header = connection.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                # resolved by the API inside its own worker-thread call: one thread hop per request
                scope.setdefault("state", {})["bearer"] = header[7:].strip()
            elif "session" in scope and isinstance(scope["session"].get(SESSION_KEY), str):
                actor = await run_in_threadpool(self.users.sessions.actor, scope["session"][SESSION_KEY])
                if actor is None:
                    scope["session"].clear()
            elif "session" in scope and "user_id" in scope["session"]:
                scope["session"].clear()  # a cookie from before server-side sessions: sign in again
            scope.setdefault("state", {})["actor"] = actor
        await self.app(scope, receive, send)


class SecureCookieMiddleware:
    """Marks cookies `Secure` when the request came over HTTPS: directly, or through a proxy
    uvicorn was told to trust (`--proxy-headers --forwarded-allow-ips=…`, which sets the
    scheme from X-Forwarded-Proto); or always, with `always` (CRM_COOKIE_SECURE=1)."""

    def __init__(self, app: ASGIApp, always: bool = False) -> None:
        self.app = app
        self.always = always

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.always or scope.get("scheme") == "https"):
            await self.app(scope, receive, send)
            return

        async def secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                cookies = headers.getlist("set-cookie")
                if cookies:
                    del headers["set-cookie"]
                    for cookie in cookies:
                        headers.append("set-cookie", cookie if "secure" in cookie.lower() else cookie + "; Secure")
            await send(message)
        await self.app(scope, receive, secure)

"""Signing in and out, and the language switch."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.runtime.ops.users import LoginRefused
from engine.runtime.web.auth import SESSION_KEY
from engine.runtime.web.screens.contexts import LoginContext
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site


def safe_next(target: str | None) -> str:
    """Only local paths: an attacker's `next=https://evil` must not redirect off the site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_screen(site: Site, request: Request) -> HTMLResponse:
    lang = site.lang(request)
    expired = request.query_params.get("expired") == "1" and SESSION_KEY not in request.session
    context = LoginContext(next_url=safe_next(request.query_params.get("next")),
                           error=translate(lang, "session_expired") if expired else None)
    return site.render(request, None, "login.html", context, translate(lang, "sign_in"))


def sign_in(site: Site, request: Request, form: Any) -> Response:
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", "/")))
    client = request.client.host if request.client else "unknown"
    users = site.services.users
    try:
        actor = users.login(username, password, client)
    except LoginRefused as refused:
        context = LoginContext(username=username[:64], next_url=next_url,
                               error=translate(site.lang(request), refused.key, **refused.values))
        return site.render(request, None, "login.html", context, translate(site.lang(request), "sign_in"),
                           status=429 if refused.throttled else 401)
    lang = request.session.get("lang")
    old = request.session.get(SESSION_KEY)
    if isinstance(old, str):
        users.sessions.end(old)  # signing in again replaces the session: never reuse a key
    request.session.clear()  # a fresh session (and CSRF token) after signing in
    assert actor.id is not None  # a signed-in user always has one
    request.session[SESSION_KEY] = users.sessions.start(actor.id, client, request.headers.get("user-agent", ""))
    if lang:
        request.session["lang"] = lang
    return RedirectResponse(next_url, status_code=303)


def sign_out(site: Site, request: Request, *, everywhere: bool = False) -> Response:
    """End this session (revoked in the database: a copy of the cookie is worthless), or with
    `everywhere` every session of the user."""
    key = request.session.get(SESSION_KEY)
    actor = getattr(request.state, "actor", None)
    if everywhere and actor is not None and actor.id is not None:
        site.services.users.sessions.end_all(actor.id)
    elif isinstance(key, str):
        site.services.users.sessions.end(key)
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang
    return RedirectResponse("/login", status_code=303)


def switch_language(site: Site, request: Request, form: Any) -> Response:
    lang = str(form.get("lang", ""))
    if lang in site.model.settings.languages:
        request.session["lang"] = lang
    return RedirectResponse(safe_next(str(form.get("next", "/"))), status_code=303)

"""Signing in and out, and the language switch."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.runtime.ops.users import LoginRefused
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
    expired = request.query_params.get("expired") == "1" and "user_id" not in request.session
    context = LoginContext(next_url=safe_next(request.query_params.get("next")),
                           error=translate(lang, "session_expired") if expired else None)
    return site.render(request, None, "login.html", context, translate(lang, "sign_in"))


def sign_in(site: Site, request: Request, form: Any) -> Response:
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", "/")))
    client = request.client.host if request.client else "unknown"
    try:
        actor = site.services.users.login(username, password, client)
    except LoginRefused as refused:
        context = LoginContext(username=username, next_url=next_url,
                               error=translate(site.lang(request), refused.key, **refused.values))
        return site.render(request, None, "login.html", context, translate(site.lang(request), "sign_in"),
                           status=401)
    lang = request.session.get("lang")
    request.session.clear()  # a fresh session (and CSRF token) after signing in
    request.session["user_id"] = actor.id
    if lang:
        request.session["lang"] = lang
    return RedirectResponse(next_url, status_code=303)


def sign_out(request: Request) -> Response:
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

"""The Starlette application: JSON API, screens, static files; webhooks mount here too."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from engine.runtime.web.services import WebServices
from engine.runtime.web.hooks import webhook_routes
from engine.runtime.storage.jsontext import JSONResponse
from engine.runtime.web.api import JsonApi
from engine.runtime.web.auth import SESSION_MAX_AGE, AuthMiddleware, SecureCookieMiddleware, secret_key
from engine.runtime.web.screens import ScreenRoutes, SecurityHeadersMiddleware, not_found_page
from engine.runtime.web.widgets import WidgetRegistry, load_widgets

MAX_BODY_BYTES = 25 * 1024 * 1024


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "method_not_allowed", "field": None,
                         "message": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)


def create_app(services: WebServices, *, widgets: WidgetRegistry | None = None, key: str | None = None) -> Starlette:
    """The web application for one runtime: security headers, sessions, the actor, then the routes.
    `key` signs the session cookies (default: `secret_key` — CRM_SECRET_KEY or a 0600 key file).

    Raises WidgetConfigError at startup when the blueprint names a widget no plugin provides,
    SecretKeyMissing when no usable secret key is configured."""
    widgets = widgets or load_widgets()
    widgets.check(services.model)
    api = JsonApi(services)
    screens = ScreenRoutes(services, widgets)

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/") or request.url.path.startswith("/hooks/"):
            return JSONResponse({"code": "not_found", "message": f"no route for {request.url.path}", "field": None},
                                status_code=404)
        return await not_found_page(screens.site, request)

    # Fixed paths first; the screens' generic /{entity}/… routes come last, so add new
    # routes (e.g. /hooks/{source}) before them.
    routes: list[BaseRoute] = [
        *api.routes(),
        *webhook_routes(services.intake, services.db),
        *screens.routes(),
    ]
    always_secure = os.environ.get("CRM_COOKIE_SECURE", "") in ("1", "true", "yes")
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(SecureCookieMiddleware, always=always_secure),
        Middleware(SessionMiddleware, secret_key=key or secret_key(services.db.url), session_cookie="crm_session",
                   max_age=SESSION_MAX_AGE, same_site="lax", https_only=always_secure),
        Middleware(AuthMiddleware, users=services.users),
    ]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={404: not_found, 405: _method_not_allowed}, max_body_size=MAX_BODY_BYTES)

"""The Starlette application: JSON API now; screens and webhooks mount here too."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Route

from .api import JsonApi
from .auth import SESSION_MAX_AGE, AuthMiddleware, session_secret
from .runtime import Runtime

MAX_BODY_BYTES = 25 * 1024 * 1024


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "not_found", "message": f"no route for {request.url.path}", "field": None},
                        status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "method_not_allowed", "field": None,
                         "message": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)


def create_app(runtime: Runtime) -> Starlette:
    """The web application for one runtime: sessions, then the actor, then the routes."""
    api = JsonApi(runtime)

    async def home(request: Request) -> Response:
        return RedirectResponse("/api/")

    routes = [Route("/", home), *api.routes()]
    middleware = [
        Middleware(SessionMiddleware, secret_key=session_secret(runtime), session_cookie="crm_session",
                   max_age=SESSION_MAX_AGE, same_site="lax", https_only=False),
        Middleware(AuthMiddleware, runtime=runtime),
    ]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={404: _not_found, 405: _method_not_allowed}, max_body_size=MAX_BODY_BYTES)

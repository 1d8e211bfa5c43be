"""The Starlette application: JSON API now; screens and webhooks mount here too."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .api import JsonApi
from .runtime import Runtime

MAX_BODY_BYTES = 25 * 1024 * 1024


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "not_found", "message": f"no route for {request.url.path}", "field": None},
                        status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "method_not_allowed", "field": None,
                         "message": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)


def create_app(runtime: Runtime) -> Starlette:
    """The web application for one runtime."""
    api = JsonApi(runtime)

    async def home(request: Request) -> Response:
        return RedirectResponse("/api/")

    from starlette.routing import Route
    routes = [Route("/", home), *api.routes()]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _method_not_allowed},
                     max_body_size=MAX_BODY_BYTES)

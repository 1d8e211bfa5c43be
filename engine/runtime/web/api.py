"""The JSON API under /api/: generic routes for every entity, all writes through RecordService.

Errors are always JSON: {"code": machine code, "message": for people, "field": the
offending field or null, "errors": [...] when several fields are wrong}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.metamodel import Metamodel
from engine.runtime.automation.conversions import Conversions
from engine.runtime.web.screens.error_texts import coded_text, error_body
from engine.runtime.web.services import WebServices
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.records.queries import parse_list_query
from engine.runtime.storage import jsontext
from engine.runtime.storage.jsontext import JSONResponse
from engine.runtime.web.funnel_json import outlook_json
from engine.runtime.web.openapi import build_openapi
from engine.runtime.web.screens.security import CSRF_HEADER, CsrfRefused, check_csrf

Endpoint = Callable[[Request], Awaitable[Response]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FILE_BYTES = 20 * 1024 * 1024


def accepted_language(request: Request, model: Metamodel) -> str:
    """The language of error messages: Accept-Language (zh…, en…), else the blueprint's default."""
    languages = model.settings.languages or ("zh", "en")
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in languages:
            return code
    return str(model.settings.default_language)


class JSONError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


MAX_JSON_BODY = 2 * 1024 * 1024  # a record's field values; far above any real record, far below a flood
MAX_KEYS = 500
MAX_RECORD_ID = 2**31 - 1  # ids are 32-bit columns: a larger one names nothing (and overflows SQLite's driver)


def _record_id(request: Request) -> int:
    raw = request.path_params["record_id"]
    try:
        value = int(raw) if len(raw) <= 12 else 0
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RECORD_ID:
        raise JSONError(404, "not_found", f"'{raw[:40]}' is not a record id", "id") from None
    return value


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its Content-Length) exceeds `limit`:
    an oversized body is never read in full, let alone parsed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise JSONError(413, "body_too_large", f"the request body is larger than {limit // 1024} KB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise JSONError(413, "body_too_large", f"the request body is larger than {limit // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """JSON as the standard demands: no NaN/Infinity, no lone surrogates, nesting ≤ 1024 (orjson
    refuses each with an error, never a crash); ValueError with the reason."""
    try:
        return jsontext.loads(body or b"null")
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


async def _json_object(request: Request) -> dict[str, Any]:
    body = await read_capped(request, MAX_JSON_BODY)
    try:
        payload = parse_json(body)
    except ValueError as exc:
        raise JSONError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise JSONError(422, "invalid_body", "the request body must be a JSON object of field values")
    if len(payload) > MAX_KEYS:  # before any field is looked at: no entity has this many
        raise JSONError(422, "invalid_body", f"the request body names {len(payload)} fields; at most {MAX_KEYS}")
    return payload


def _expected_version(request: Request, payload: dict[str, Any] | None = None) -> int | None:
    raw = (payload or {}).pop("version", None)
    if raw is None:
        raw = request.headers.get("if-match") or request.query_params.get("version")
    if raw is None:
        return None
    try:
        return int(str(raw).strip('"W/ '))
    except ValueError:
        raise JSONError(422, "invalid_version", f"version '{raw}' is not a whole number", "version") from None


class JsonApi:
    """Route handlers bound to the web services; `actor_for` decides who a request acts as."""

    def __init__(self, services: WebServices) -> None:
        self.services = services
        self.records = services.records
        self._openapi: dict[str, Any] | None = None

    def lang(self, request: Request) -> str:
        return accepted_language(request, self.services.model)

    def actor_for(self, request: Request) -> Actor:
        """The signed-in user (session, or bearer token looked up here); 401 when there is none.
        May query the database: call it from a worker thread (see `_call`)."""
        actor: Actor | None = getattr(request.state, "actor", None)
        token = getattr(request.state, "bearer", None)
        if actor is None and token:
            found = self.services.users.sessions.token_actor(token)
            if found is not None:
                actor, scope = found
                if scope == "read" and request.method not in SAFE_METHODS:
                    raise JSONError(403, "token_read_only", "this API token may only read (scope 'read'); "
                                                            "create a 'write' token to change records")
            request.state.actor = actor
        if actor is None:
            raise JSONError(401, "unauthenticated", "sign in, or send 'Authorization: Bearer <token>' "
                                                    "(create one with `crm token create USERNAME`); a revoked or "
                                                    "expired token is refused")
        return actor

    async def _call(self, request: Request, function: Callable[..., Any], *args: Any, write: bool = False,
                    **kwargs: Any) -> Any:
        """Run `function(*args, actor=…, **kwargs)` off the event loop (see `Database.run`),
        resolving the actor in the same call."""
        def work() -> Any:
            return function(*args, actor=self.actor_for(request), **kwargs)
        return await self.services.db.run(work, write=write)

    def routes(self) -> list[Route]:
        handle = self._handle
        return [
            Route("/api/openapi.json", handle(self.openapi, public=True), methods=["GET"]),
            Route("/api/", handle(self.index, public=True), methods=["GET"]),
            Route("/api/files", handle(self.upload_file), methods=["POST"]),
            Route("/api/files/{file_id:int}", handle(self.download_file), methods=["GET"]),
            Route("/api/{entity}", handle(self.list_records), methods=["GET"]),
            Route("/api/{entity}", handle(self.create_record), methods=["POST"]),
            Route("/api/{entity}/{record_id}", handle(self.get_record), methods=["GET"]),
            Route("/api/{entity}/{record_id}", handle(self.update_record), methods=["PATCH"]),
            Route("/api/{entity}/{record_id}", handle(self.delete_record), methods=["DELETE"]),
            Route("/api/{entity}/{record_id}/events", handle(self.record_events), methods=["GET"]),
            Route("/api/{entity}/{record_id}/transition", handle(self.transition), methods=["POST"]),
            Route("/api/{entity}/{record_id}/funnel", handle(self.funnel), methods=["GET"]),
            Route("/api/{entity}/{record_id}/convert", handle(self.convert), methods=["POST"]),
            Route("/api/{entity}/{record_id}/approvals/{approval}", handle(self.request_approval), methods=["POST"]),
            Route("/api/approval_task/{record_id}/decide", handle(self.decide), methods=["POST"]),
        ]

    def _handle(self, endpoint: Endpoint, *, public: bool = False) -> Endpoint:
        async def wrapped(request: Request) -> Response:
            try:
                if not public and getattr(request.state, "actor", None) is None and \
                        not getattr(request.state, "bearer", None):
                    self.actor_for(request)  # no credentials at all: 401 without touching the database
                if request.method not in SAFE_METHODS and not getattr(request.state, "bearer", None):
                    self._check_csrf(request)
                return await endpoint(request)
            except RecordError as error:
                return error_response(error.status, error_body(error, self.lang(request), self.services.model,
                                                               request.path_params.get("entity"),
                                                               request.path_params.get("record_id")))
            except JSONError as error:
                message = coded_text(error.code, self.lang(request), error.message, error.field,
                                     model=self.services.model, entity=request.path_params.get("entity"))
                return error_response(error.status, {"code": error.code, "message": message,
                                                     "field": error.field},
                                      headers={"WWW-Authenticate": "Bearer"} if error.status == 401 else None)
            except sa.exc.IntegrityError:
                return error_response(409, {"code": "conflict", "field": None, "message": coded_text(
                    "conflict", self.lang(request), "the change conflicts with another record written at "
                                                    "the same moment; retry it")})
        return wrapped

    @staticmethod
    def _check_csrf(request: Request) -> None:
        """A browser session writing through the API must send its CSRF token (X-CSRF-Token);
        bearer-token clients are not exposed to cross-site requests and need none."""
        try:
            check_csrf(request, request.headers.get(CSRF_HEADER))
        except CsrfRefused:
            raise JSONError(403, "csrf_refused", "a signed-in browser must send its X-CSRF-Token header; "
                                                 "API clients use 'Authorization: Bearer <token>'") from None

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = build_openapi(self.services.model)
        return JSONResponse(self._openapi)

    async def index(self, request: Request) -> Response:
        model = self.services.model
        return JSONResponse({"app": model.name, "label": model.label.as_dict(), "entities": [
            {"name": e.name, "label": e.label.as_dict(), "url": f"/api/{e.name}"} for e in model.entities]})

    async def list_records(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        query = parse_list_query(entity, request.query_params)
        if not query.fields:  # no fields=: the view's columns and what names the record (fields=* for every field)
            query = dataclasses.replace(query, fields=(
                "id", "version", entity.title_field, *entity.list_view(query.view or "default").columns))
        page = await self._call(request, self.records.list, entity.name, query)
        return JSONResponse({"items": [self.records.to_json(entity.name, item) for item in page.items],
                             "total": page.total, "total_exact": page.exact, "page": page.page,
                             "per_page": page.per_page, "pages": page.pages, "has_more": page.more})

    async def create_record(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        payload = await _json_object(request)
        result = await self._call(request, self.records.create, entity.name, payload, write=True)
        body = self.records.to_json(entity.name, result.record)
        status = 200 if result.outcome == "merged" else 201
        return JSONResponse(body, status_code=status, headers={
            "Location": f"/api/{entity.name}/{result.record['id']}", "X-CRM-Outcome": result.outcome,
            "ETag": f'"{result.record["version"]}"'})

    async def get_record(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record = await self._call(request, self._open, entity.name, _record_id(request))
        return JSONResponse(self.records.to_json(entity.name, record), headers={"ETag": f'"{record["version"]}"'})

    def _open(self, entity_name: str, record_id: int, *, actor: Actor) -> dict[str, Any]:
        """A record someone opened: read it, and let a `viewed_by` SLA stop see the view."""
        record = self.records.get(entity_name, record_id, actor=actor)
        self.records.record_view(entity_name, record, actor=actor)  # changes no field of the record
        return record

    async def update_record(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record_id = _record_id(request)
        payload = await _json_object(request)
        version = _expected_version(request, payload)
        record = await self._call(request, self.records.update, entity.name, record_id, payload, write=True,
                                  expected_version=version)
        return JSONResponse(self.records.to_json(entity.name, record), headers={"ETag": f'"{record["version"]}"'})

    async def delete_record(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record_id = _record_id(request)
        await self._call(request, self.records.delete, entity.name, record_id, write=True,
                         expected_version=_expected_version(request))
        return Response(status_code=204)

    async def convert(self, request: Request) -> Response:
        """Convert the record as its blueprint declares (a lead → account, contact, opportunity): 201
        with the converted record and what it became; 409 when it was converted already."""
        entity = self.records.entity(request.path_params["entity"])
        conversions = Conversions(self.services.model, self.records, self.records.evaluator, self.services.clock)
        done = await self._call(request, conversions.convert, entity.name, _record_id(request), write=True)
        return JSONResponse({"record": self.records.to_json(entity.name, done.record),
                             "created": {step: {"entity": item[0], "id": item[1], "matched": item[2]}
                                         for step, item in done.created.items()}}, status_code=201)

    async def record_events(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record_id = _record_id(request)

        events = await self._call(request, self.records.events, entity.name, record_id)
        return JSONResponse({"items": [event.as_json() for event in events]})

    async def transition(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record_id = _record_id(request)
        payload = await _json_object(request)
        version = _expected_version(request, payload)
        field, target = payload.get("field"), payload.get("to")
        if not isinstance(target, str) or not target:
            raise JSONError(422, "invalid_body", "give the target value as \"to\"", "to")
        record = await self._call(request, self.records.transition, entity.name, record_id, target, write=True,
                                  field=field, expected_version=version)
        return JSONResponse(self.records.to_json(entity.name, record), headers={"ETag": f'"{record["version"]}"'})

    async def funnel(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record_id, lang = _record_id(request), self.lang(request)

        def outlook(actor: Actor) -> dict[str, Any] | None:
            record = self.records.get(entity.name, record_id, actor=actor)
            found = self.services.funnels.outlook(entity, record)
            return None if found is None else outlook_json(found, self.services.model, entity, lang)
        body = await self.services.db.run(lambda: outlook(self.actor_for(request)))
        if body is None:
            raise JSONError(404, "no_funnel", f"{entity.name} has no funnel", "entity")
        return JSONResponse(body)

    async def request_approval(self, request: Request) -> Response:
        entity = self.records.entity(request.path_params["entity"])
        record_id, name = _record_id(request), request.path_params["approval"]
        payload = await _json_object(request) if await request.body() else {}
        desk = self.services.approvals
        if desk is None:
            raise JSONError(404, "no_approvals", "this blueprint declares no approvals", "approval")
        reason = payload.get("reason")
        approval = await self._call(request, desk.request, entity.name, record_id, name, write=True,
                                    reason=str(reason) if reason else None)
        return JSONResponse(self.records.to_json("approval", approval), status_code=201,
                            headers={"Location": f"/api/approval/{approval['id']}"})

    async def decide(self, request: Request) -> Response:
        record_id = _record_id(request)
        payload = await _json_object(request)
        version = _expected_version(request, payload)
        desk = self.services.approvals
        if desk is None:
            raise JSONError(404, "no_approvals", "this blueprint declares no approvals", "approval")
        decision, comment = payload.get("decision"), payload.get("comment")
        if decision not in ("approve", "reject"):
            raise JSONError(422, "invalid_body", "give \"decision\": \"approve\" or \"reject\" (and a \"comment\")",
                            "decision")
        task = await self._call(request, desk.decide, record_id, str(decision),
                                str(comment) if comment is not None else None, write=True, expected_version=version)
        return JSONResponse(self.records.to_json("approval_task", task), headers={"ETag": f'"{task["version"]}"'})

    async def upload_file(self, request: Request) -> Response:
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise JSONError(422, "missing_file", "send the file as multipart form field 'file'", "file")
        content = await upload.read(MAX_FILE_BYTES + 1)
        if len(content) > MAX_FILE_BYTES:
            raise JSONError(413, "file_too_large", f"files are limited to {MAX_FILE_BYTES // 1024 // 1024} MB",
                            "file")
        name = (upload.filename or "file")[:255]
        content_type = (upload.content_type or "application/octet-stream")[:128]
        stored = await self._call(request, self.services.records.store_file, name, content_type, content, write=True)
        return JSONResponse(stored, status_code=201, headers={"Location": f"/api/files/{stored['id']}"})

    async def download_file(self, request: Request) -> Response:
        file_id = int(request.path_params["file_id"])
        if not 1 <= file_id <= MAX_RECORD_ID:
            raise JSONError(404, "not_found", f"file {str(file_id)[:40]} does not exist", "id")
        row = await self._call(request, self.records.read_file, file_id)
        # A type off the allow-list is served as bytes: with nosniff, a browser will never run an
        # uploaded .js or .html as a script or page of this origin. Preview (inline) only for listed types.
        content_type = row.content_type if row.content_type in INLINE_TYPES else "application/octet-stream"
        inline = request.query_params.get("inline") == "1" and content_type != "application/octet-stream"
        disposition = ("inline" if inline else "attachment") + "; filename*=UTF-8''" + _quote(row.name)
        return Response(row.content, media_type=content_type,
                        headers={"Content-Disposition": disposition, "ETag": f'"{row.sha256}"',
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store",
                                 "Content-Security-Policy": "sandbox; default-src 'none'"})


# Uploaded types a browser may show inline (images, PDF, plain text); anything else downloads as bytes.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"})


def _quote(name: str) -> str:
    from urllib.parse import quote
    return quote(name, safe="")

"""The inbound webhooks route, /hooks/{source}: the raw delivery is logged, then processed by the
intake (engine/runtime/automation/sources.py) in one write; the answer says the outcome.

Anonymous senders reach this route, so before anything is written: an unknown source is
answered 404, a body over the source's `max_body_kb` 413 (never read in full), and more than
the source's `rate_per_minute` deliveries from one address within a minute 429. What is kept
is pruned by `crm deliveries prune` (docs/security.md)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from engine.metamodel import Metamodel
from engine.metamodel.sources import SourceSpec
from engine.runtime.automation.sources import (MAX_BODY, PREVIEW_BYTES, DeliveryStatus, Intake, IntakeRefused,
                                               IntakeResult)
from engine.runtime.storage.database import Database
from engine.runtime.storage.jsontext import JSONResponse
from engine.runtime.web.api import accepted_language
from engine.runtime.web.screens.catalogue import catalogue
from engine.runtime.web.screens.error_texts import error_body, error_text
from engine.runtime.web.screens.i18n import translate

_TRACKED = 10_000  # addresses remembered per process: beyond it the oldest are forgotten


class RateLimiter:
    """At most `limit` events per key within a sliding minute, in this process's memory."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, str], limit: int) -> float | None:
        """None when allowed (and counted), else the seconds until the next one would be."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            self._hits[key] = hits  # most recently seen last
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= limit:
                return max(0.1, hits[0] + self.window - now)
            hits.append(now)
            while len(self._hits) > _TRACKED:
                del self._hits[next(iter(self._hits))]
            return None


def webhook_routes(intake: Intake, db: Database) -> list[BaseRoute]:
    """The /hooks/{source} route; answers JSON with the outcome and the delivery id."""
    limiter = RateLimiter()

    async def receive(request: Request) -> JSONResponse:
        name = request.path_params["source"]
        lang = accepted_language(request, intake.model)
        source = intake.model.source(name) if len(name) <= 64 and intake.model.has_source(name) else None
        if source is None:
            refused = IntakeRefused(404, "unknown_source", f"there is no webhook source '{name[:64]}'", source=name[:64])
            return JSONResponse(_said(refused.result(None), lang, intake.model, None), status_code=404)
        client = request.client.host if request.client else "unknown"
        wait = limiter.allow((source.name, client), source.rate_per_minute)
        if wait is not None:
            seconds = int(wait) + 1
            refused = IntakeRefused(429, "rate_limited", f"more than {source.rate_per_minute} deliveries a minute "
                                    f"from {client}; retry in {seconds} s", rate=source.rate_per_minute,
                                    client=client, seconds=seconds)
            return JSONResponse(_said(refused.result(None), lang, intake.model, source), status_code=429,
                                headers={"Retry-After": str(seconds)})
        headers, query = dict(request.headers), request.scope["query_string"].decode("latin-1")
        limit = min(source.max_body_kb * 1024, MAX_BODY)
        body, size = await _read_bounded(request, limit)
        if size > limit:  # logged with its size and first bytes, never read whole
            message = f"body larger than {limit // 1024} KB (max_body_kb of source '{source.name}')"
            delivery_id = await db.run(lambda: intake.log_refused(source.name, headers, query, body, size,
                                                                  DeliveryStatus.REJECTED, message), write=True)
            declared = request.headers.get("content-length", "")
            sent = f"{size} bytes" if declared.isdigit() else f"more than {limit} bytes"
            refused = IntakeRefused(413, "body_too_large", f"{message}: {sent}; send a smaller payload",
                                    kb=limit // 1024, source=source.name, received=size)
            return JSONResponse(_said(refused.result(delivery_id), lang, intake.model, source), status_code=413)

        def log_and_process() -> IntakeResult:
            """The raw delivery is written on its own first: it is kept even if processing it fails."""
            delivery_id = intake.log_delivery(source.name, headers, query, body)
            return intake.process_logged(source.name, delivery_id, headers, dict(request.query_params), body)
        result = await db.run(log_and_process, write=True)
        return JSONResponse(_said(result, lang, intake.model, source), status_code=result.status)

    return [Route("/hooks/{source}", receive, methods=["POST"])]


def _said(result: IntakeResult, lang: str, model: Metamodel, source: SourceSpec | None) -> dict[str, Any]:
    """The answer's body with its message in the sender's language (Accept-Language, else the
    blueprint's default, as the JSON API): a refusal by its `hook_error_<code>` text, a refused
    record as the API words it. `detail` keeps the English text the delivery log holds."""
    body = result.body()
    if lang == "en":
        return body
    params = dict(result.params)
    if result.error is not None:  # named by the refused record's labels: the source's, or one of its records'
        record = params.get("record")
        entity = next((linked.entity for linked in source.records if linked.name == record), source.entity) \
            if source is not None else None
        if record:
            message = f"{record}: {error_text(result.error, lang, model, entity)}"
        else:  # as the JSON API answers it: the message and each field's error in `lang`
            translated = error_body(result.error, lang, model, entity)
            message = str(translated["message"])
            if "errors" in translated and "errors" in body:
                body["errors"] = translated["errors"]
    elif result.code and f"hook_error_{result.code}" in catalogue(lang):
        message = translate(lang, f"hook_error_{result.code}", **params)
    else:
        return body
    if message != result.message:
        body["message"], body["detail"] = message, result.message
    return body


async def _read_bounded(request: Request, limit: int) -> tuple[bytes, int]:
    """The body, or — once it passes `limit` — its first PREVIEW_BYTES and the size read so far
    (reading stops there, so a huge body is never read whole nor held in memory)."""
    declared = request.headers.get("content-length", "")
    kept = bytearray()
    size = int(declared) if declared.isdigit() and int(declared) > limit else 0
    async for chunk in request.stream():
        if size > limit:  # declared too large, or grown past the limit: keep the first bytes, read no more
            kept += chunk[:max(0, PREVIEW_BYTES - len(kept))]
            break
        size += len(chunk)
        if size <= limit:
            kept += chunk
        else:
            kept += chunk[:max(0, PREVIEW_BYTES - len(kept))]
            del kept[PREVIEW_BYTES:]
            break
    return bytes(kept), size

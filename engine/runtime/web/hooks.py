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

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from engine.runtime.automation.sources import MAX_BODY, PREVIEW_BYTES, DeliveryStatus, Intake, IntakeResult
from engine.runtime.storage.database import Database
from engine.runtime.storage.jsontext import JSONResponse

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
        source = intake.model.source(name) if len(name) <= 64 and intake.model.has_source(name) else None
        if source is None:
            return JSONResponse({"outcome": "rejected", "message": f"there is no webhook source '{name[:64]}'"},
                                status_code=404)
        client = request.client.host if request.client else "unknown"
        wait = limiter.allow((source.name, client), source.rate_per_minute)
        if wait is not None:
            return JSONResponse({"outcome": "rejected", "message": f"more than {source.rate_per_minute} deliveries "
                                 f"a minute from {client}; retry in {int(wait) + 1} s"}, status_code=429,
                                headers={"Retry-After": str(int(wait) + 1)})
        headers, query = dict(request.headers), request.scope["query_string"].decode("latin-1")
        limit = min(source.max_body_kb * 1024, MAX_BODY)
        body, size = await _read_bounded(request, limit)
        if size > limit:  # logged with its size and first bytes, never read whole
            message = f"body larger than {limit // 1024} KB (max_body_kb of source '{source.name}')"
            delivery_id = await db.run(lambda: intake.log_refused(source.name, headers, query, body, size,
                                                                  DeliveryStatus.REJECTED, message), write=True)
            declared = request.headers.get("content-length", "")
            sent = f"{size} bytes" if declared.isdigit() else f"more than {limit} bytes"
            return JSONResponse({"outcome": "rejected", "delivery_id": delivery_id,
                                 "message": f"{message}: {sent}; send a smaller payload"}, status_code=413)

        def log_and_process() -> IntakeResult:
            """The raw delivery is written on its own first: it is kept even if processing it fails."""
            delivery_id = intake.log_delivery(source.name, headers, query, body)
            return intake.process_logged(source.name, delivery_id, headers, dict(request.query_params), body)
        result = await db.run(log_and_process, write=True)
        return JSONResponse(result.body(), status_code=result.status)

    return [Route("/hooks/{source}", receive, methods=["POST"])]


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
